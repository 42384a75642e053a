"""The client runs on paho-mqtt 1.6.x and 2.x: run-tests.sh runs every test
once with each, and this checks the run really has the line it names."""

import os
from importlib.metadata import version

import pytest

from axion_push_client import paho_compat


def test_the_paho_mqtt_line_under_test_is_the_one_installed():
    expected = os.environ.get("AXION_PUSH_EXPECT_PAHO")
    if expected is None:
        pytest.skip("run-tests.sh names the paho-mqtt line it installed")
    installed = version("paho-mqtt")
    assert installed == expected or installed.startswith(f"{expected}."), installed
    assert paho_compat.IS_PAHO_2 == (expected == "2")


def test_a_refused_connection_is_reported_in_words_on_either_line():
    # 5 = not authorised, as paho-mqtt 1.x passes it to on_connect.
    assert paho_compat.connect_refusal(0) is None
    assert "not authori" in paho_compat.connect_refusal(5).lower()
