import pickle

from rfcn.errors import TrainingDiverged, UserError


def test_user_error_survives_a_process_boundary() -> None:
    """A parallel run's error reaches the CLI with its file and problem (pickled back)."""
    error = pickle.loads(pickle.dumps(UserError("a.yaml", "bad value")))
    assert isinstance(error, UserError)
    assert (error.source, error.problem, str(error)) == ("a.yaml", "bad value", "a.yaml: bad value")


def test_a_divergence_names_its_iteration_and_survives_a_process_boundary() -> None:
    error = pickle.loads(pickle.dumps(TrainingDiverged(206, float("nan"))))
    assert isinstance(error, UserError) and error.iteration == 206
    assert str(error) == (
        "iteration 206: loss is nan: training diverged; lower train.base_lr or set "
        "train.max_grad_norm"
    )
