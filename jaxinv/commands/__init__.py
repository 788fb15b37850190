"""Sub-commands of ``jaxinv`` that live outside :mod:`jaxinv.cli`, one module each.

A module here defines ``add(sub)`` (adds its argparse sub-parser(s) to ``sub``) and
``COMMANDS`` (name -> ``fn(args)``); :mod:`jaxinv.cli` loads every module in ``MODULES``.
A module may also define ``add_attack(asub)`` and ``ATTACKS`` (name -> ``fn(args)``): attacks
under ``jaxinv attack`` that are not chain kernels of the registry.
"""

MODULES = ("jaxinv.commands.train_gan", "jaxinv.commands.p2i", "jaxinv.commands.finetune_gan",
           "jaxinv.commands.network_inversion", "jaxinv.commands.gradient_leakage",
           "jaxinv.commands.membership", "jaxinv.commands.two_stage", "jaxinv.commands.grid")
