"""Enrolled devices: keys, re-enrolment (rotation), listing, reported state, removal."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from memory import DEVICE_OFFLINE, DeviceRow, Store, StoreClosed, StoreCorrupt, StoreInvalidData
from protocol.auth import DeviceKey, derive_key, enroll, new_nonce, proof_mac, verify_proof

if TYPE_CHECKING:
    from conftest import ManualClock

SALT = "00112233445566778899aabbccddeeff"
KEY = "ab" * 32


def only(store: Store, name: str = "laptop") -> DeviceRow:
    rows = [row for row in store.devices() if row.name == name]
    assert len(rows) == 1
    return rows[0]


def test_an_enrolled_device_has_its_key(store: Store) -> None:
    store.enroll_device("laptop", salt=SALT, key=KEY)
    assert store.device_key("laptop") == (SALT, KEY)


def test_an_unknown_device_has_no_key(store: Store) -> None:
    assert store.device_key("nope") is None
    store.enroll_device("laptop", salt=SALT, key=KEY)
    assert store.device_key("Laptop") is None  # names are case-sensitive


def test_a_new_device_is_offline_unseen_and_unlabelled(store: Store, clock: ManualClock) -> None:
    store.enroll_device("laptop", salt=SALT, key=KEY)
    assert store.devices() == [
        DeviceRow(
            name="laptop", created_at=clock.now, last_seen=None, state=DEVICE_OFFLINE, labels=None
        )
    ]
    assert DEVICE_OFFLINE == "offline"


def test_re_enrolling_rotates_the_key_and_keeps_the_rest(store: Store, clock: ManualClock) -> None:
    enrolled = clock.now
    store.enroll_device("laptop", salt=SALT, key=KEY)
    store.update_device("laptop", state="online", last_seen=clock.advance(5), labels=["linux"])
    before = only(store)
    clock.advance(60)
    store.enroll_device("laptop", salt="ff" * 16, key="cd" * 32)
    assert store.device_key("laptop") == ("ff" * 16, "cd" * 32)
    assert only(store) == before
    assert before.created_at == enrolled
    assert len(store.devices()) == 1


def test_devices_are_listed_by_name_without_their_keys(store: Store) -> None:
    for name in ["pi", "desktop", "laptop", "Zeta"]:
        store.enroll_device(name, salt=SALT, key=KEY)
    assert [row.name for row in store.devices()] == ["Zeta", "desktop", "laptop", "pi"]
    assert not hasattr(store.devices()[0], "key")
    assert not hasattr(store.devices()[0], "salt")


def test_no_devices_at_first(store: Store) -> None:
    assert store.devices() == []


def test_update_device_changes_only_what_it_is_given(store: Store, clock: ManualClock) -> None:
    store.enroll_device("laptop", salt=SALT, key=KEY)
    assert store.update_device("laptop", state="online")
    assert (only(store).state, only(store).last_seen, only(store).labels) == ("online", None, None)
    seen = clock.advance(3)
    assert store.update_device("laptop", last_seen=seen)
    assert (only(store).state, only(store).last_seen, only(store).labels) == ("online", seen, None)
    assert store.update_device("laptop", labels=["linux", "gpu"])
    assert (only(store).state, only(store).last_seen) == ("online", seen)
    assert only(store).labels == ["linux", "gpu"]
    assert store.update_device("laptop", state="lost", last_seen=seen + 1, labels=[])
    row = only(store)
    assert (row.state, row.last_seen, row.labels) == ("lost", seen + 1, [])
    assert store.device_key("laptop") == (SALT, KEY)  # the key is never touched


def test_update_device_with_nothing_to_change_reports_enrolment(store: Store) -> None:
    store.enroll_device("laptop", salt=SALT, key=KEY)
    assert store.update_device("laptop")
    assert not store.update_device("nope")


def test_updating_an_unknown_device_does_not_create_it(store: Store) -> None:
    assert not store.update_device("ghost", state="online", last_seen=1.0, labels=["x"])
    assert store.devices() == []
    assert store.device_key("ghost") is None


def test_labels_round_trip(store: Store, db_path: Path) -> None:
    labels = ["linux", "gpu:nvidia", "naïve ☃", "with space", ""]
    store.enroll_device("laptop", salt=SALT, key=KEY)
    store.update_device("laptop", labels=labels)
    store.update_device("laptop", labels=tuple(labels))  # any sequence of strings
    assert only(store).labels == labels
    with Store.open_path(db_path) as reopened:
        assert only(reopened).labels == labels


def test_last_seen_accepts_an_int(store: Store) -> None:
    store.enroll_device("laptop", salt=SALT, key=KEY)
    store.update_device("laptop", last_seen=1_700_000_123)
    assert only(store).last_seen == 1_700_000_123.0


def test_remove_device(store: Store, clock: ManualClock) -> None:
    store.enroll_device("laptop", salt=SALT, key=KEY)
    store.enroll_device("pi", salt=SALT, key=KEY)
    assert store.remove_device("laptop")
    assert not store.remove_device("laptop")
    assert not store.remove_device("never")
    assert store.device_key("laptop") is None
    assert [row.name for row in store.devices()] == ["pi"]
    enrolled_again = clock.advance(10)
    store.enroll_device("laptop", salt="11" * 16, key="22" * 32)
    row = only(store)
    assert (row.created_at, row.state, row.labels, row.last_seen) == (
        enrolled_again,
        DEVICE_OFFLINE,
        None,
        None,
    )


def test_devices_survive_reopening(store: Store, db_path: Path, clock: ManualClock) -> None:
    store.enroll_device("laptop", salt=SALT, key=KEY)
    store.update_device("laptop", state="online", last_seen=clock.now, labels=["a"])
    before = store.devices()
    store.close()
    with Store.open_path(db_path) as reopened:
        assert reopened.device_key("laptop") == (SALT, KEY)
        assert reopened.devices() == before


def test_hex_is_stored_as_given(store: Store) -> None:
    store.enroll_device("laptop", salt="ABCDEF01", key="AbCd")
    assert store.device_key("laptop") == ("ABCDEF01", "AbCd")


@pytest.mark.parametrize(
    ("name", "salt", "key", "match"),
    [
        pytest.param("", SALT, KEY, "device name", id="empty-name"),
        pytest.param("laptop", "", KEY, "salt", id="empty-salt"),
        pytest.param("laptop", "xyz1", KEY, "salt", id="salt-not-hex"),
        pytest.param("laptop", SALT, "abc", "key", id="key-odd-length"),
        pytest.param("laptop", SALT, "ab cd", "key", id="key-with-space"),
        pytest.param("laptop", SALT, b"ab", "key", id="key-bytes"),
    ],
)
def test_bad_enrolments_are_refused(
    store: Store, name: Any, salt: Any, key: Any, match: str
) -> None:
    with pytest.raises(StoreInvalidData, match=match):
        store.enroll_device(name, salt=salt, key=key)
    assert store.devices() == []


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        pytest.param({"state": ""}, "state", id="empty-state"),
        pytest.param({"last_seen": math.nan}, "finite", id="last-seen-nan"),
        pytest.param({"last_seen": math.inf}, "finite", id="last-seen-inf"),
        pytest.param({"last_seen": True}, "unix time", id="last-seen-bool"),
        pytest.param({"last_seen": "now"}, "unix time", id="last-seen-str"),
        pytest.param({"labels": "linux"}, "list of strings", id="labels-str"),
        pytest.param({"labels": ["ok", 3]}, "list of strings", id="labels-int"),
        pytest.param({"labels": {"a": 1}}, "list of strings", id="labels-dict"),
    ],
)
def test_bad_updates_are_refused_and_change_nothing(
    store: Store, changes: dict[str, Any], match: str
) -> None:
    store.enroll_device("laptop", salt=SALT, key=KEY)
    before = store.devices()
    with pytest.raises(StoreInvalidData, match=match):
        store.update_device("laptop", **{"state": "online", **changes})
    assert store.devices() == before


def test_labels_damaged_in_the_file_are_reported_as_corrupt(store: Store, db_path: Path) -> None:
    store.enroll_device("laptop", salt=SALT, key=KEY)
    with sqlite3.connect(db_path) as connection:
        connection.execute('UPDATE devices SET labels = \'{"not": "a list"}\'')
    with pytest.raises(StoreCorrupt, match="labels of device 'laptop'"):
        store.devices()
    assert store.device_key("laptop") == (SALT, KEY)  # the key is still readable


def test_a_closed_store_refuses_device_calls(db_path: Path) -> None:
    store = Store.open_path(db_path)
    store.close()
    with pytest.raises(StoreClosed):
        store.enroll_device("laptop", salt=SALT, key=KEY)
    with pytest.raises(StoreClosed):
        store.device_key("laptop")
    with pytest.raises(StoreClosed):
        store.devices()
    with pytest.raises(StoreClosed):
        store.update_device("laptop", state="online")
    with pytest.raises(StoreClosed):
        store.remove_device("laptop")


def test_a_stored_key_verifies_a_handshake_proof(store: Store) -> None:
    """The plain strings the store keeps are all `protocol.auth` needs."""
    token, record = enroll("laptop")
    store.enroll_device(record.device, salt=record.salt, key=record.key)
    stored = store.device_key("laptop")
    assert stored is not None
    salt, key = stored
    nonce = new_nonce()
    mac = proof_mac(derive_key(token, salt), device="laptop", nonce=nonce, version=1)
    assert verify_proof(DeviceKey("laptop", salt, key), nonce=nonce, version=1, mac=mac)

    new_token, rotated = enroll("laptop")  # re-enrolment: the old token stops working
    store.enroll_device("laptop", salt=rotated.salt, key=rotated.key)
    stored = store.device_key("laptop")
    assert stored is not None
    salt, key = stored
    old_mac = proof_mac(derive_key(token, salt), device="laptop", nonce=nonce, version=1)
    new_mac = proof_mac(derive_key(new_token, salt), device="laptop", nonce=nonce, version=1)
    assert not verify_proof(DeviceKey("laptop", salt, key), nonce=nonce, version=1, mac=old_mac)
    assert verify_proof(DeviceKey("laptop", salt, key), nonce=nonce, version=1, mac=new_mac)
