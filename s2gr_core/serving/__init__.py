"""Serving: a trained model's bundle (``bundle``) and the request handler that answers from it
(``recommender``); MLflow's pyfunc around them lives in ``s2gr/pyfunc_model.py``."""
