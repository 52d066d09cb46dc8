"""What people do with a trained run: weights in and out, predict, figures."""
