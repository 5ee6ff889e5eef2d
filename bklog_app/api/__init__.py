"""The REST API (Django REST framework): authentication, error shape, and the resources."""
