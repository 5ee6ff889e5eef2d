"""`/metrics`: every process's samples in the Prometheus text format (pipeline/metrics.py)."""

from django.http import HttpResponse

from pipeline.metrics import render


def metrics(request) -> HttpResponse:
    body, content_type = render()
    return HttpResponse(body, content_type=content_type)
