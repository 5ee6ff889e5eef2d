import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bklog_app.settings")

django_application = get_wsgi_application()

from bklog_app.capture.fastpath import CaptureFastPath  # noqa: E402 (needs Django set up)

# Capture requests skip Django's middleware stack (bklog_app/capture/fastpath.py says why).
application = CaptureFastPath(django_application)
