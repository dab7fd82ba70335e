"""`python -m tools.prepare_assets`: meshes -> lighting baked into vertex colours in
Blender -> 3D Gaussians, as the paper's Sketchfab28 set was made (Appendix D).
`prepare.py` drives it; `blender_bake.py` is the script Blender runs."""
