"""Classify the 8x8 digits bundled with fastnn: fit with validation and early stopping,
then evaluate, save, load and predict.  Runs in a few seconds:

    python examples/classify_digits.py
"""
import os
import tempfile

import numpy as np

import fastnn as fn

X, y = fn.datasets.load_digits()                      # (1797, 64) pixels 0..16, labels
X_train, X_test, y_train, y_test = fn.datasets.train_test_split(X / 16, y, test_size=0.2,
                                                                seed=0)

model = fn.Sequential(fn.Dense(64, 128, activation="relu"), fn.Dense(128, 10),
                      dtype=np.float32, seed=0)
model.summary()

history = model.fit(X_train, y_train, loss="cross_entropy",
                    optimizer=fn.Adam(model, lr=2e-3), epochs=60, batch_size=32,
                    validation_split=0.1, seed=0, progress=False,
                    callbacks=[fn.EarlyStopping("val_loss", patience=5,
                                                restore_best_weights=True)])
print(f"trained {len(history)} epochs; best val_loss {min(history.val_loss):.4f}")

scores = model.evaluate(X_test, y_test)               # the loss of the last fit
print(f"test loss {scores['loss']:.4f}, test accuracy {100 * scores['accuracy']:.2f}%")

with tempfile.TemporaryDirectory() as tmp:            # save and load round trip
    path = os.path.join(tmp, "digits.npz")
    model.save(path)
    again = fn.load(path)
    assert np.array_equal(again.predict(X_test), model.predict(X_test))
print("first test digits:", model.predict(X_test[:10]).argmax(axis=1), "true:", y_test[:10])
