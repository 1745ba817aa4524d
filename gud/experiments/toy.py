"""Configuration of experiment 'toy' per run profile (placeholder: the chapter author fills it)."""

CONFIGS = {'ci': {'dim': 16,
        'n_samples': 2000,
        'sampler_steps': 100,
        'softness': [0.0, 0.5, 1.0, 2.0, 8.0],
        'seed': 0},
 'gpu': {'dim': 64,
         'n_samples': 20000,
         'sampler_steps': 200,
         'softness': [0.0, 0.5, 1.0, 2.0, 8.0],
         'seed': 0},
 'paper': {'dim': 64,
           'n_samples': 50000,
           'sampler_steps': 500,
           'softness': [0.0, 0.5, 1.0, 2.0, 8.0],
           'seed': 0}}
