"""The image builds here, keeps its HEALTHCHECK (Docker format: the OCI format has none), and
its container answers /_health and serves the admin's stylesheet, by its plain name and by the
hashed name the login page links, from the static files collected at build time
(support-files/build-image.sh checks each and says so).

Building takes several minutes on these machines (debootstrap of the stand-in base the first
time, then installing every wheel into the image), which is too long for every run of the
suite: set BKLOG_TEST_IMAGE=1 to include it. hadolint runs always (tests/ops/test_manifests.py).
"""

import os
import re
import subprocess

import pytest

from tests.ops.processes import ROOT

pytestmark = pytest.mark.skipif(
    os.environ.get("BKLOG_TEST_IMAGE") != "1",
    reason="the image build takes minutes: opt in with BKLOG_TEST_IMAGE=1",
)


def test_image_builds_and_its_container_answers_health_and_serves_static_files():
    result = subprocess.run(
        ["bash", str(ROOT / "support-files" / "build-image.sh")],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "the image keeps its HEALTHCHECK: {[CMD python3 -c import os, urllib.request;" in output
    assert "the container answers /_health" in output
    assert 'the container serves /static/admin/css/base.css (text/css; charset="utf-8")' in output
    assert re.search(
        r'the container serves /static/admin/css/base\.[0-9a-f]{12}\.css \(text/css; charset="utf-8"\)', output
    )
