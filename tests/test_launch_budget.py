"""greenpool/launch/budget.py's arithmetic, without a server (the end-to-end form, with a
throwaway mariadbd, is tests/faults/test_connection_budget.py)."""

from __future__ import annotations

from greenpool.launch.budget import ServerCounts, assess

SETTINGS = {"workers": 4, "hosts": 1, "connection_budget": 0.8}


def _budget(counts: ServerCounts, own: int = 1, max_size: int = 5, **settings):
    return assess("db:3306", ["default"], max_size, {**SETTINGS, **settings}, counts, own)


def test_this_host_counts_one_replacement_worker_and_the_fleet_multiplies_by_hosts():
    budget = _budget(ServerCounts(151, 1, 0, 1), hosts=3)
    assert (budget.this_host, budget.fleet) == (25, 75)


def test_free_leaves_out_the_checking_workers_own_connections():
    assert _budget(ServerCounts(151, 11, 0, 11), own=2).free == 151 - 9


def test_an_account_limit_below_the_servers_free_count_is_what_is_free():
    budget = _budget(ServerCounts(151, 41, 20, 6), own=1)
    assert budget.free == 20 - 5
    assert budget.over  # 25 > 0.8 * 15
    assert "max_user_connections 20 with 5 in use, so 15 free" in budget.describe()


def test_over_is_strictly_above_the_share():
    assert not _budget(ServerCounts(60, 21, 0, 21), own=1, max_size=4, connection_budget=0.5).over  # 20 = 0.5 * 40
    assert _budget(ServerCounts(60, 22, 0, 22), own=1, max_size=4, connection_budget=0.5).over


def test_a_full_server_is_over_and_says_so():
    budget = _budget(ServerCounts(100, 130, 0, 130), own=1)
    assert budget.free == 0 and budget.over
    assert "so 0 free: 25 is more than is free" in budget.describe()
