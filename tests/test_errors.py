import pickle

from rfcn.errors import UserError


def test_user_error_survives_a_process_boundary() -> None:
    """A parallel run's error reaches the CLI with its file and problem (pickled back)."""
    error = pickle.loads(pickle.dumps(UserError("a.yaml", "bad value")))
    assert isinstance(error, UserError)
    assert (error.source, error.problem, str(error)) == ("a.yaml", "bad value", "a.yaml: bad value")
