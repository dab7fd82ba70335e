// The 4D Gaussian viewer of t4a_jax (t4a_jax/export/viewer.py writes it into one HTML
// file with its data). WebGL2, no dependencies.
//
// Data (window.T4A_DATA, decoded from base64): N Gaussians, T frames.
//   positions  uint16 [T, N, 3]  quantised in the box [lo, hi] (per-frame centres)
//   colors     uint8  [Tc, N, 3] colour (SH degree 0) per frame (Tc = T) or once (Tc = 1)
//   scales     float32 [N, 3]    canonical scales (exp of the log-scales)
//   quats      float32 [N, 4]    canonical rotations (w, x, y, z), any norm
//   opacity    uint8  [N]        opacity x 255
// Cameras follow the project's convention (OpenCV: x right, y down, z forward; +z up
// in the world); viewmat = world -> camera, K the pixel intrinsics.
// Splatting: each Gaussian's 2D covariance J W S W^T J^T + 0.3 I (as the 3DGS
// rasterizer), a quad to 3 sigma, alpha = min(0.99, opacity * exp(-d^2 / 2)),
// back-to-front "over" compositing of premultiplied colours after a depth sort.
"use strict";

(function () {
  const DATA = window.T4A_DATA;

  function decode(b64, Type) {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Type(bytes.buffer);
  }

  const N = DATA.num_gaussians, T = DATA.num_frames;
  const positions = decode(DATA.positions, Uint16Array);
  const colors = decode(DATA.colors, Uint8Array);
  const colorFrames = colors.length / (3 * N);
  const scales = decode(DATA.scales, Float32Array);
  const quats = decode(DATA.quats, Float32Array);
  const opacity = decode(DATA.opacity, Uint8Array);
  const lo = DATA.lo, hi = DATA.hi;

  // Canonical 3D covariances (upper triangle xx, xy, xz, yy, yz, zz) per Gaussian.
  const cov3d = new Float32Array(6 * N);
  for (let i = 0; i < N; i++) {
    let w = quats[4 * i], x = quats[4 * i + 1], y = quats[4 * i + 2], z = quats[4 * i + 3];
    const n = Math.hypot(w, x, y, z) || 1;
    w /= n; x /= n; y /= n; z /= n;
    const R = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
               2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
               2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)];
    const s = [scales[3 * i], scales[3 * i + 1], scales[3 * i + 2]];
    const M = new Array(9);  // R * diag(s)
    for (let r = 0; r < 3; r++) for (let c = 0; c < 3; c++) M[3 * r + c] = R[3 * r + c] * s[c];
    const S = (a, b) => M[3 * a] * M[3 * b] + M[3 * a + 1] * M[3 * b + 1] + M[3 * a + 2] * M[3 * b + 2];
    cov3d.set([S(0, 0), S(0, 1), S(0, 2), S(1, 1), S(1, 2), S(2, 2)], 6 * i);
  }

  function centre(frame, i, out) {
    const base = 3 * (frame * N + i);
    for (let k = 0; k < 3; k++) out[k] = lo[k] + (hi[k] - lo[k]) * positions[base + k] / 65535;
    return out;
  }

  // ----------------------------------------------------------------- WebGL2
  const canvas = document.getElementById("splats");
  const gl = canvas.getContext("webgl2", {antialias: false, premultipliedAlpha: true,
                                          preserveDrawingBuffer: true, alpha: true});
  if (!gl) throw new Error("WebGL2 is not available");

  const vertexSource = `#version 300 es
    precision highp float;
    in vec2 a_corner;
    in vec3 a_centre;
    in vec3 a_cov_a;   // xx, xy, xz
    in vec3 a_cov_b;   // yy, yz, zz
    in vec4 a_color;   // rgb, opacity
    uniform mat4 u_view;
    uniform vec4 u_intrinsics;   // fx, fy, cx, cy
    uniform vec2 u_size;         // width, height (pixels)
    out vec4 v_color;
    out vec2 v_offset;
    void main() {
      vec4 t = u_view * vec4(a_centre, 1.0);
      if (t.z < 0.01) { gl_Position = vec4(0.0, 0.0, 2.0, 1.0); return; }
      float fx = u_intrinsics.x, fy = u_intrinsics.y;
      mat3 J = mat3(fx / t.z, 0.0, 0.0,
                    0.0, fy / t.z, 0.0,
                    -fx * t.x / (t.z * t.z), -fy * t.y / (t.z * t.z), 0.0);
      mat3 W = mat3(u_view);
      mat3 V = mat3(a_cov_a.x, a_cov_a.y, a_cov_a.z,
                    a_cov_a.y, a_cov_b.x, a_cov_b.y,
                    a_cov_a.z, a_cov_b.y, a_cov_b.z);
      mat3 C = J * W * V * transpose(W) * transpose(J);
      float a = C[0][0] + 0.3, b = C[0][1], d = C[1][1] + 0.3;
      float mid = 0.5 * (a + d);
      float radius = length(vec2(0.5 * (a - d), b));
      float l1 = mid + radius, l2 = max(mid - radius, 0.1);
      vec2 axis = radius > 1e-6 ? normalize(vec2(b, l1 - a)) : vec2(1.0, 0.0);
      if (abs(b) < 1e-9) axis = a >= d ? vec2(1.0, 0.0) : vec2(0.0, 1.0);
      vec2 major = 3.0 * sqrt(l1) * axis;
      vec2 minor = 3.0 * sqrt(l2) * vec2(-axis.y, axis.x);
      vec2 pixel = vec2(fx * t.x / t.z + u_intrinsics.z, fy * t.y / t.z + u_intrinsics.w)
                   + a_corner.x * major + a_corner.y * minor;
      gl_Position = vec4(2.0 * pixel.x / u_size.x - 1.0, 1.0 - 2.0 * pixel.y / u_size.y,
                         0.0, 1.0);
      v_color = a_color;
      v_offset = 3.0 * a_corner;
    }`;
  const fragmentSource = `#version 300 es
    precision highp float;
    in vec4 v_color;
    in vec2 v_offset;
    out vec4 fragColor;
    void main() {
      float alpha = min(0.99, v_color.a * exp(-0.5 * dot(v_offset, v_offset)));
      if (alpha < 1.0 / 255.0) discard;
      fragColor = vec4(v_color.rgb * alpha, alpha);
    }`;

  function compile(type, source) {
    const shader = gl.createShader(type);
    gl.shaderSource(shader, source);
    gl.compileShader(shader);
    if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS))
      throw new Error(gl.getShaderInfoLog(shader));
    return shader;
  }
  const program = gl.createProgram();
  gl.attachShader(program, compile(gl.VERTEX_SHADER, vertexSource));
  gl.attachShader(program, compile(gl.FRAGMENT_SHADER, fragmentSource));
  gl.linkProgram(program);
  if (!gl.getProgramParameter(program, gl.LINK_STATUS))
    throw new Error(gl.getProgramInfoLog(program));
  gl.useProgram(program);

  const vao = gl.createVertexArray();
  gl.bindVertexArray(vao);
  const cornerBuffer = gl.createBuffer();
  gl.bindBuffer(gl.ARRAY_BUFFER, cornerBuffer);
  gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, 1, 1, -1, 1]), gl.STATIC_DRAW);
  const cornerLoc = gl.getAttribLocation(program, "a_corner");
  gl.enableVertexAttribArray(cornerLoc);
  gl.vertexAttribPointer(cornerLoc, 2, gl.FLOAT, false, 0, 0);
  const indexBuffer = gl.createBuffer();
  gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, indexBuffer);
  gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, new Uint16Array([0, 1, 2, 0, 2, 3]), gl.STATIC_DRAW);

  // One interleaved instance buffer: centre 3, cov 6, colour 4 = 13 floats.
  const STRIDE = 13;
  const instances = new Float32Array(STRIDE * N);
  const instanceBuffer = gl.createBuffer();
  gl.bindBuffer(gl.ARRAY_BUFFER, instanceBuffer);
  gl.bufferData(gl.ARRAY_BUFFER, instances.byteLength, gl.DYNAMIC_DRAW);
  [["a_centre", 3, 0], ["a_cov_a", 3, 3], ["a_cov_b", 3, 6], ["a_color", 4, 9]].forEach(
    ([name, size, offset]) => {
      const loc = gl.getAttribLocation(program, name);
      gl.enableVertexAttribArray(loc);
      gl.vertexAttribPointer(loc, size, gl.FLOAT, false, 4 * STRIDE, 4 * offset);
      gl.vertexAttribDivisor(loc, 1);
    });
  const uView = gl.getUniformLocation(program, "u_view");
  const uIntrinsics = gl.getUniformLocation(program, "u_intrinsics");
  const uSize = gl.getUniformLocation(program, "u_size");

  // ----------------------------------------------------------------- camera
  const camera = Object.assign({azimuth: 0, elevation: 15, distance: 3, fovy: 40},
                               DATA.camera || {});
  let explicit = null;   // {viewmat (row-major 16), K (row-major 9)} set by setCamera

  function orbitViewmat() {
    const az = camera.azimuth * Math.PI / 180, el = camera.elevation * Math.PI / 180;
    const eye = [camera.distance * Math.cos(el) * Math.cos(az),
                 camera.distance * Math.cos(el) * Math.sin(az),
                 camera.distance * Math.sin(el)];
    const norm = (v) => { const n = Math.hypot(...v); return v.map((x) => x / n); };
    const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2],
                             a[0] * b[1] - a[1] * b[0]];
    const forward = norm(eye.map((x) => -x));
    const right = norm(cross(forward, [0, 0, 1]));
    const up = cross(right, forward);
    const rows = [right, up.map((x) => -x), forward];   // camera x right, y down, z forward
    const m = [];
    for (const r of rows) m.push(r[0], r[1], r[2], -(r[0] * eye[0] + r[1] * eye[1] + r[2] * eye[2]));
    m.push(0, 0, 0, 1);
    return m;
  }

  function currentCamera() {
    if (explicit) return explicit;
    const f = 0.5 * canvas.height / Math.tan(camera.fovy * Math.PI / 360);
    return {viewmat: orbitViewmat(), K: [f, 0, canvas.width / 2, 0, f, canvas.height / 2, 0, 0, 1]};
  }

  // ----------------------------------------------------------------- drawing
  let frame = 0;
  const depths = new Float32Array(N);
  const order = new Uint32Array(N);
  const tmp = [0, 0, 0];

  function draw() {
    const {viewmat, K} = currentCamera();
    const colorBase = colorFrames > 1 ? frame * N : 0;
    for (let i = 0; i < N; i++) {
      centre(frame, i, tmp);
      depths[i] = viewmat[8] * tmp[0] + viewmat[9] * tmp[1] + viewmat[10] * tmp[2] + viewmat[11];
      order[i] = i;
    }
    order.sort((a, b) => depths[b] - depths[a]);        // far to near
    for (let k = 0; k < N; k++) {
      const i = order[k], o = STRIDE * k;
      centre(frame, i, tmp);
      instances[o] = tmp[0]; instances[o + 1] = tmp[1]; instances[o + 2] = tmp[2];
      for (let j = 0; j < 6; j++) instances[o + 3 + j] = cov3d[6 * i + j];
      const c = 3 * (colorBase + i);
      instances[o + 9] = colors[c] / 255;
      instances[o + 10] = colors[c + 1] / 255;
      instances[o + 11] = colors[c + 2] / 255;
      instances[o + 12] = opacity[i] / 255;
    }
    gl.bindBuffer(gl.ARRAY_BUFFER, instanceBuffer);
    gl.bufferSubData(gl.ARRAY_BUFFER, 0, instances);
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clearColor(0, 0, 0, 0);
    gl.clear(gl.COLOR_BUFFER_BIT);
    gl.enable(gl.BLEND);
    gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
    // column-major upload of the row-major viewmat
    gl.uniformMatrix4fv(uView, true, new Float32Array(viewmat));
    gl.uniform4f(uIntrinsics, K[0], K[4], K[2], K[5]);
    gl.uniform2f(uSize, canvas.width, canvas.height);
    gl.bindVertexArray(vao);
    gl.drawElementsInstanced(gl.TRIANGLES, 6, gl.UNSIGNED_SHORT, 0, N);
  }

  // ----------------------------------------------------------------- UI
  const slider = document.getElementById("frame");
  const label = document.getElementById("frame-label");
  const playButton = document.getElementById("play");
  slider.max = String(T - 1);
  let playing = true, last = performance.now(), clock = 0, dirty = true;
  const listeners = [];

  function setFrame(f) {
    frame = ((Math.round(f) % T) + T) % T;
    slider.value = String(frame);
    label.textContent = `frame ${frame + 1} / ${T}`;
    listeners.forEach((fn) => fn(frame));
    dirty = true;
  }
  slider.addEventListener("input", () => { playing = false; updatePlay(); setFrame(+slider.value); });
  function updatePlay() { playButton.textContent = playing ? "pause" : "play"; }
  playButton.addEventListener("click", () => { playing = !playing; updatePlay(); });

  let dragging = null;
  canvas.addEventListener("pointerdown", (e) => { dragging = [e.clientX, e.clientY]; explicit = null; });
  window.addEventListener("pointerup", () => { dragging = null; });
  window.addEventListener("pointermove", (e) => {
    if (!dragging) return;
    camera.azimuth -= 0.4 * (e.clientX - dragging[0]);
    camera.elevation = Math.max(-89, Math.min(89, camera.elevation + 0.4 * (e.clientY - dragging[1])));
    dragging = [e.clientX, e.clientY];
    dirty = true;
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    explicit = null;
    camera.distance = Math.max(0.5, Math.min(20, camera.distance * Math.exp(0.001 * e.deltaY)));
    dirty = true;
  }, {passive: false});

  function tick(now) {
    if (playing) {
      clock += (now - last) / 1000;
      const step = Math.floor(clock * DATA.fps);
      if (step > 0) { clock -= step / DATA.fps; setFrame(frame + step); }
    }
    last = now;
    if (dirty) { draw(); dirty = false; }
    requestAnimationFrame(tick);
  }

  // ----------------------------------------------------------------- the API tests use
  window.t4a = {
    numFrames: T,
    setFrame: (f) => { playing = false; updatePlay(); setFrame(f); draw(); dirty = false; },
    setCamera: (viewmat, K, width, height) => {
      explicit = {viewmat: Array.from(viewmat), K: Array.from(K)};
      canvas.width = width; canvas.height = height;
      draw(); dirty = false;
    },
    alpha: () => {   // the canvas's coverage, uint8 [H, W] (row 0 at the top), base64
      const px = new Uint8Array(4 * canvas.width * canvas.height);
      gl.readPixels(0, 0, canvas.width, canvas.height, gl.RGBA, gl.UNSIGNED_BYTE, px);
      const out = new Uint8Array(canvas.width * canvas.height);
      for (let y = 0; y < canvas.height; y++)
        for (let x = 0; x < canvas.width; x++)
          out[y * canvas.width + x] = px[4 * ((canvas.height - 1 - y) * canvas.width + x) + 3];
      let s = "";
      for (let i = 0; i < out.length; i++) s += String.fromCharCode(out[i]);
      return btoa(s);
    },
    onFrame: (fn) => listeners.push(fn),
  };

  updatePlay();
  setFrame(0);
  draw();
  dirty = false;
  requestAnimationFrame((now) => { last = now; tick(now); });
  window.t4aReady = true;
})();
