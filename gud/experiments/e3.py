"""Configuration of experiment 'e3' per run profile (placeholder: the chapter author fills it)."""

CONFIGS = {'ci': {'dataset': 'digits',
        'image_size': 8,
        'image_index': 0,
        'times': [0.0, 0.25, 0.5, 0.75, 1.0],
        'seed': 0},
 'gpu': {'dataset': 'cifar10',
         'image_size': 32,
         'image_index': 0,
         'times': [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
         'seed': 0},
 'paper': {'dataset': 'cifar10',
           'image_size': 32,
           'image_index': 0,
           'times': [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
           'seed': 0}}
