"""Every ``switchbert`` command-line module: each parses its arguments, calls the library and prints.

    models, configs, smoke   presets with parameter counts; the shipped recipes; a quick forward pass
    data                     features convert | inspect, synth
    train                    pretrain, finetune, evaluate, report (also ``python -m`` for torchrun)
    import_checkpoint        VOLTA and HF checkpoints into model directories
    demo                     the synthetic benchmark end to end

The library never imports this package (tests/test_layout.py).
"""
