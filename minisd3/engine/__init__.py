"""The training engine: one run of a text-to-image (or class-conditional) MM-DiT from a config.

    config         TrainConfig, the named presets, ``--set key=value`` overrides
    data           data sources (shapes, digits, CIFAR-10, image folders, latent caches): one protocol, one dispatch
    latent_cache   encode a data set once with an autoencoder, read it back memory-mapped
    loop           build → train_step → train: the run loop, its schedules, logging and summaries
    checkpoints    atomic safetensors checkpoints, resume, stored models by name, export, load_run
    evaluation     samples, prompt adherence with chance, sliced Wasserstein, FID, eval CSVs
    grids          labelled sample grids (prompt and detector verdicts under each image)
    benchmark      training throughput and MFU against diffusers
    sweep          one preset at several depths (hidden 64·depth): validation loss, FLOPs, path length

The engine imports lesson modules (``minisd3.*``) and never the course tooling (``minisd3.course``).
"""

DATASETS = ("shapes", "glyphs", "digits", "cifar10", "imagefolder")
"""Every data set the engine reads, by the name ``--data`` / ``data=`` takes (read by :mod:`minisd3.engine.data`)."""
