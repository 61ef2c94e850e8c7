"""`mlops retrain`: train → evaluate → compare with the champion → register → promote."""
