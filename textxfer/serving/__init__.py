"""Using trained models: predicting files, the HTTP server and its page, cross-request batching."""
