"""An installation moving from the Python module to the daemon, on MariaDB:
Axion's table as the module left it (the fixture's DDL and other users'
rows), a browser it recorded the way it recorded them ('Y', CHAR columns,
NULL Module and CreatedAt), and config.yaml's base.push holding the PEM key
py_vapid made. Once the daemon runs on that database with that file, the
old calls answer as the module did from its table, and a push reaches the
browser signed with the same key: nobody subscribes again.

Needs MariaDB: the server AXION_PUSH_TEST_MARIADB names (default the
machine's, mysql://root@127.0.0.1:3306, which .ci/run starts), where the
test makes a database of its own and drops it. Without one it fails,
saying so. (web/test/migration.test.js plays the same move with a real
Firefox.)"""

import os
import urllib.parse
import uuid

import pymysql
import pytest
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid
from py_vapid.utils import b64urlencode

from axion_push_client import objnotifypush
from daemon import REPO, Daemon

SERVER = (os.environ.get("AXION_PUSH_TEST_MARIADB") or "mysql://root@127.0.0.1:3306").rstrip("/")
AXION_TABLE = (REPO / "tests" / "fixtures" / "axion-subscription-table.mysql.sql").read_text(encoding="utf-8")
PACKAGE = "crm"
#: The fixture's users, whose rows the Python module wrote for other browsers.
FIXTURE_USERS = [("alice", "crm"), ("bob", "crm"), ("bob", "base")]
COLUMNS = "User, Package, Module, Endpoint, UserAgent, CreatedAt, Active"


def connect(database=None):
    url = urllib.parse.urlsplit(SERVER.replace("mariadb://", "mysql://", 1))
    try:
        return pymysql.connect(
            host=url.hostname,
            port=url.port or 3306,
            user=urllib.parse.unquote(url.username or "root"),
            password=urllib.parse.unquote(url.password or ""),
            database=database,
            autocommit=True,
            client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS,
            cursorclass=pymysql.cursors.DictCursor,
            connect_timeout=5,
        )
    except pymysql.err.OperationalError as e:
        pytest.fail(
            f"MariaDB is not reachable at {SERVER} ({e}). This test needs it: start MariaDB "
            "(.ci/run does) or set AXION_PUSH_TEST_MARIADB to a mysql:// server URL.",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def axion_database():
    """A database of the test's own holding Axion's table as installed."""
    name = f"axion_push_py_{uuid.uuid4().hex[:16]}"
    admin = connect()
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        conn = connect(name)
        with conn.cursor() as cursor:
            cursor.execute(AXION_TABLE)
            while cursor.nextset():
                pass
        yield name, conn
        conn.close()
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


@pytest.fixture(scope="module")
def py_vapid_key():
    """The installation's key pair as py_vapid made it: the PEM private key
    and the base64url public key Axion's config.yaml holds."""
    vapid = Vapid()
    vapid.generate_keys()
    public = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return vapid.private_pem().decode("ascii"), b64urlencode(public)


def table_rows(conn, user, package):
    with conn.cursor() as cursor:
        cursor.execute(
            f"SELECT {COLUMNS} FROM def_notify_push_subscription WHERE User = %s AND Package = %s ORDER BY Endpoint",
            (user, package),
        )
        return cursor.fetchall()


@pytest.fixture(scope="module")
def moved(tmp_path_factory, push_service, axion_database, py_vapid_key):
    """The browser the module recorded, then the daemon started on Axion's
    database with the installation's config.yaml key."""
    name, conn = axion_database
    browser = push_service.browser("recorded-by-the-module")
    user = f"user-{uuid.uuid4().hex[:10]}"
    # ObjNotifyPush.subscribe(user, package, subscription_json, user_agent):
    # its INSERT, Module and CreatedAt left NULL, Active 'Y'.
    with conn.cursor() as cursor:
        cursor.execute(
            "INSERT INTO def_notify_push_subscription (User, Package, Endpoint, KeysP256dh, KeysAuth, UserAgent, Active)"
            " VALUES (%s, %s, %s, %s, %s, %s, 'Y')",
            (user, PACKAGE, browser.endpoint, browser.p256dh, browser.auth_text,
             "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0"),
        )
    before = {who: table_rows(conn, *who) for who in [(user, PACKAGE), *FIXTURE_USERS]}
    pem, public = py_vapid_key
    base_push = "vapid_private_key: |\n" + "".join(f"  {line}\n" for line in pem.strip().splitlines())
    base_push += f"vapid_public_key: {public}\n"
    daemon = Daemon(
        tmp_path_factory.mktemp("moved-daemon"),
        push_service.ca_path,
        push_port=push_service.port,
        database_url=f"{SERVER}/{name}",
        base_push=base_push,
    ).start()
    yield {"daemon": daemon, "browser": browser, "user": user, "conn": conn, "before": before, "public": public}
    daemon.stop()


@pytest.fixture
def moved_shim(moved):
    objnotifypush.configure(config=str(moved["daemon"].config_path), timeout=15)
    yield objnotifypush
    objnotifypush.client().close()


def as_the_module_read_it(row):
    """A row as the module's get_subscriptions gave it: the table's
    columns; an Active left NULL counts as 'Y' (the daemon's reading too)."""
    return {**row, "Active": "N" if row["Active"] == "N" else "Y"}


def test_get_subscriptions_answers_as_the_module_did_from_its_table(moved, moved_shim):
    for user, package in [(moved["user"], PACKAGE), *FIXTURE_USERS]:
        expected = [as_the_module_read_it(r) for r in moved["before"][(user, package)]]
        everything = sorted(moved_shim.get_subscriptions(user, package, include_inactive=True), key=lambda r: r["Endpoint"])
        assert everything == expected, (user, package)
        active = sorted(moved_shim.get_subscriptions(user, package), key=lambda r: r["Endpoint"])
        assert active == [r for r in expected if r["Active"] == "Y"], (user, package)


def test_send_push_reaches_the_module_s_browser_signed_with_the_py_vapid_key(moved, moved_shim, push_service):
    assert moved_shim.send_push(moved["user"], "Moved over", "Nothing to do", package=PACKAGE) is True
    [push] = push_service.wait_for(moved["browser"])
    assert push.error is None
    assert push.status == 201
    assert push.payload["title"] == "Moved over"
    assert push.vapid["k"] == moved["public"], "the daemon signed with another key than config.yaml's"


def test_axion_s_table_is_as_the_module_left_it(moved, moved_shim, push_service):
    assert moved_shim.send_push(moved["user"], "Again", "", package=PACKAGE) is True
    push_service.wait_for(moved["browser"], count=2)
    for (user, package), rows in moved["before"].items():
        assert table_rows(moved["conn"], user, package) == rows, (user, package)
