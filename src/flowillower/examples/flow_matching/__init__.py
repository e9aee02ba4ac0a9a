"""Flow matching on 2-D point clouds (a T-Rex by default), tracked with flowillower.

A velocity MLP learns to carry Gaussian noise onto a target point cloud. The modules keep
one concern each so the training script stays short enough to read and to replay:

| module | concern | needs |
|---|---|---|
| `config` | the configuration tree, Hydra-style `a.b=value` overrides, validation | omegaconf |
| `data` | T-Rex, moons, spirals, checkerboard and Gaussian-mixture point clouds | numpy |
| `model` | the velocity network, the flow-matching loss, Euler / midpoint sampling | torch |
| `metrics` | energy and Chamfer distances between point clouds | torch |
| `plots` | comparison, trajectory and vector-field PNGs, an animated GIF | pillow |
| `train` | the training script itself (what `flowillower replay` transplants into) | all |
| `visualize` | a model's pictures (shared with `train`); pictures of a finished run | all |
| `cli` | `flowillower demo train / visualize / all / quickstart` | click |

Nothing here is imported by `import flowillower`.
"""
