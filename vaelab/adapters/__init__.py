"""Adapters: models from other libraries seen as vaelab latent variable models (`posterior(x)` and
`log_joint(x, z)`, plus a prior and a likelihood where the model has them apart), so that vaelab's IS, AIS, BDMC
and gap code measure them. Each adapter is one module whose library is an optional extra:

- `vaelab.adapters.pythae`: pythae's VAE family (`pip install --no-deps pythae`, extra `pythae`).
"""
