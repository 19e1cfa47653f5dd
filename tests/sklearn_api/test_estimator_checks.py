"""scikit-learn's own compatibility suite on fastnn.sklearn's estimators: every check,
none skipped or expected to fail by fastnn."""
import pytest

pytest.importorskip("sklearn", reason="fastnn.sklearn needs scikit-learn (the dev extra)")
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastnn.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


# max_iter=100, as scikit-learn's own suite sets for its MLPs (warnings, not failures,
# when a check's tiny data set does not converge).
@parametrize_with_checks([MLPClassifier(max_iter=100), MLPRegressor(max_iter=100)])
def test_scikit_learn_compatible(estimator, check):
    check(estimator)
