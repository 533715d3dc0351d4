"""A model version that serves like the real one, then fails: an injected fault, logged as a real
MLflow "model from code" and loaded by the real gateway. A canary whose dependency starts failing
in the middle of a rollout cannot be produced on demand any other way.

``model_config``: ``fail_after`` = number of predict calls answered before every call raises.
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class FailsAfter(PythonModel):
    def load_context(self, context):
        self.inner = mlflow.pyfunc.load_model(context.artifacts["inner"])
        self.fail_after = int(context.model_config["fail_after"])
        self.calls = 0

    # A DataFrame hint: MLflow infers no schema from it (the inner model's signature applies).
    def predict(self, context, model_input: pd.DataFrame, params=None):
        self.calls += 1
        if self.calls > self.fail_after:
            raise RuntimeError(f"injected fault: predict call {self.calls} > fail_after {self.fail_after}")
        return self.inner.predict(model_input)


mlflow.models.set_model(FailsAfter())
