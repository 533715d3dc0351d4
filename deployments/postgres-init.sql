-- One database per service that keeps state in PostgreSQL (the image creates `prefect` itself).
CREATE DATABASE mlflow;
CREATE DATABASE optuna;
CREATE DATABASE feast;  -- Feast's SQL registry
