"""Weight-initialization experiments on MNIST, composed with Hydra and tracked in MLflow."""
