"""Training the student: the loop, the corpus it reads, evaluation and MLflow tracking."""
