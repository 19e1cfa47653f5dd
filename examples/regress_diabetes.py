"""Regression on the diabetes data bundled with fastnn, with MSE and with Huber loss
(robust to outliers); targets standardised for training, scores in the original units.

    python examples/regress_diabetes.py
"""
import numpy as np

import fastnn as fn

X, y = fn.datasets.load_diabetes()                    # (442, 10) scaled features
X_train, X_test, y_train, y_test = fn.datasets.train_test_split(X, y, test_size=0.2,
                                                                seed=0)
mean, std = y_train.mean(), y_train.std()

for loss in ("mse", fn.HuberLoss(delta=1.0)):
    model = fn.Sequential(fn.Dense(10, 32, activation="relu"), fn.Dense(32, 1),
                          dtype=np.float64, seed=0)
    model.fit(X_train, (y_train - mean) / std, loss=loss, optimizer="adam",
              epochs=200, batch_size=32, seed=0, progress=False)
    pred = model.predict(X_test)[:, 0] * std + mean
    rmse = np.sqrt(np.mean((pred - y_test) ** 2))
    r2 = 1 - np.sum((pred - y_test) ** 2) / np.sum((y_test - y_test.mean()) ** 2)
    name = loss if isinstance(loss, str) else repr(loss)
    print(f"{name:>22}: test rmse {rmse:.2f}, test R^2 {r2:.3f}")
