"""Runs inside Blender (`blender -b --factory-startup --python blender_bake.py -- JOB.json`):
import one mesh, normalise it, light it with the four lights of the job, bake Cycles'
combined pass into a vertex-colour attribute and write the result for the tool.

JOB.json (written by `tools.prepare_assets.bake`):
    {"mesh": path, "out": path.npz, "radius": r, "samples": n,
     "lights": [{"name", "type": "AREA"|"POINT"|"SUN"|"SPOT", "position": [x, y, z],
                 "power": W, "color": [r, g, b], "size": m}, ...],
     "background": {"color": [r, g, b], "strength": s}}

Blender's frame is +z up, as the project's cameras: glTF / FBX / OBJ importers convert
their files' axes into it; a .ply is taken as +z up. Every mesh object of the file is
joined into one, its transforms applied, then moved so that its bounding box is
centred at the origin and scaled so that its farthest vertex lies `radius` from it.
Lights aim at the origin. The bake: Cycles on the CPU, `COMBINED` with direct and
indirect light and the diffuse, glossy, transmission and emission components, into a
float colour attribute on the points (vertices), i.e. linear radiance; objects without
a material get a grey (0.8) diffuse one. Written to "out": vertices float32 [V, 3]
(after normalisation), faces int32 [F, 3] (Blender's triangulation of the polygons),
colors float32 [V, 3] (linear), and the normalisation (centre, scale) applied.
This file uses only Blender's bundled Python (bpy, mathutils, numpy).
"""

import json
import os
import sys

import bpy
import numpy as np
from mathutils import Vector

IMPORTERS = {
    ".obj": lambda p: bpy.ops.wm.obj_import(filepath=p),
    ".glb": lambda p: bpy.ops.import_scene.gltf(filepath=p),
    ".gltf": lambda p: bpy.ops.import_scene.gltf(filepath=p),
    ".fbx": lambda p: bpy.ops.import_scene.fbx(filepath=p),
    ".ply": lambda p: bpy.ops.import_mesh.ply(filepath=p),
}


def fail(message):
    print(f"T4A_BAKE_ERROR: {message}", flush=True)
    sys.exit(3)


def import_mesh(path):
    ext = os.path.splitext(path)[1].lower()
    if ext not in IMPORTERS:
        fail(f"{path}: Blender has no importer for {ext} here (known: {sorted(IMPORTERS)})")
    IMPORTERS[ext](path)
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH" and o.data.polygons]
    if not meshes:
        fail(f"{path}: no mesh with faces in the file")
    bpy.ops.object.select_all(action="DESELECT")
    for o in meshes:
        o.select_set(True)
    bpy.context.view_layer.objects.active = meshes[0]
    if len(meshes) > 1:
        bpy.ops.object.join()
    obj = bpy.context.view_layer.objects.active
    for o in list(bpy.context.scene.objects):          # empties, cameras, lights of the file
        if o is not obj:
            bpy.data.objects.remove(o, do_unlink=True)
    bpy.ops.object.transform_apply(location=True, rotation=True, scale=True)
    return obj


def normalise(obj, radius):
    mesh = obj.data
    points = np.empty(len(mesh.vertices) * 3)
    mesh.vertices.foreach_get("co", points)
    points = points.reshape(-1, 3)
    centre = (points.min(0) + points.max(0)) / 2
    extent = np.linalg.norm(points - centre, axis=1).max()
    if not extent > 0:
        fail("the mesh has no extent")
    scale = radius / extent
    mesh.vertices.foreach_set("co", ((points - centre) * scale).ravel())
    mesh.update()
    return centre, scale


def add_light(spec):
    data = bpy.data.lights.new(spec["name"], type=spec["type"])
    data.energy = spec["power"]
    data.color = spec["color"]
    if spec["type"] == "AREA":
        data.size = spec.get("size", 1.0)
    light = bpy.data.objects.new(spec["name"], data)
    bpy.context.scene.collection.objects.link(light)
    light.location = Vector(spec["position"])
    direction = -light.location                       # aim at the origin
    light.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()


def ensure_material(obj):
    """A mesh without a material gets a diffuse one: its own colour attribute (a file's
    vertex colours) as the base colour where it has one, else grey 0.8."""
    if any(slot.material for slot in obj.material_slots):
        return
    material = bpy.data.materials.new("t4a_default")
    material.use_nodes = True
    nodes = material.node_tree.nodes
    bsdf = nodes.get("Principled BSDF")
    bsdf.inputs["Base Color"].default_value = (0.8, 0.8, 0.8, 1.0)
    if len(obj.data.color_attributes):
        source = nodes.new("ShaderNodeAttribute")
        source.attribute_name = obj.data.color_attributes[0].name
        material.node_tree.links.new(source.outputs["Color"], bsdf.inputs["Base Color"])
    obj.data.materials.append(material)


def bake(obj, samples):
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    attribute = obj.data.color_attributes.new("t4a_baked", "FLOAT_COLOR", "POINT")
    obj.data.color_attributes.active_color = attribute
    bpy.ops.object.select_all(action="DESELECT")
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj
    bake = scene.render.bake
    bake.target = "VERTEX_COLORS"
    bake.use_pass_direct = bake.use_pass_indirect = True
    for name in ("diffuse", "glossy", "transmission", "emit"):
        setattr(bake, f"use_pass_{name}", True)
    bpy.ops.object.bake(type="COMBINED", target="VERTEX_COLORS")
    colors = np.empty(len(attribute.data) * 4, np.float32)
    attribute.data.foreach_get("color", colors)
    return colors.reshape(-1, 4)[:, :3]


def main():
    job_path = sys.argv[sys.argv.index("--") + 1]
    with open(job_path) as f:
        job = json.load(f)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    obj = import_mesh(job["mesh"])
    centre, scale = normalise(obj, job["radius"])
    ensure_material(obj)
    for spec in job["lights"]:
        add_light(spec)
    world = bpy.data.worlds.new("t4a_world")
    world.use_nodes = True
    background = world.node_tree.nodes["Background"]
    background.inputs["Color"].default_value = (*job["background"]["color"], 1.0)
    background.inputs["Strength"].default_value = job["background"]["strength"]
    bpy.context.scene.world = world
    colors = bake(obj, job["samples"])
    mesh = obj.data
    mesh.calc_loop_triangles()
    vertices = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", vertices)
    faces = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("vertices", faces)
    np.savez(job["out"], vertices=vertices.reshape(-1, 3), faces=faces.reshape(-1, 3),
             colors=colors, centre=np.asarray(centre), scale=np.float64(scale))
    print("T4A_BAKE_DONE", flush=True)


main()
