"""The KSM adapter against a sysfs directory of files, as the kernel lays it out: turned on at
the lab rate, and the settings found first handed back so that `host down` restores them."""

from swarmlab.adapters import ksm


def fake_sysfs(tmp_path, run=0, pages=100, sleep=20, sharing=0):
    for name, value in (("run", run), ("pages_to_scan", pages), ("sleep_millisecs", sleep),
                        ("pages_sharing", sharing)):
        (tmp_path / name).write_text(f"{value}\n")
    return tmp_path


def test_turning_on_keeps_what_was_there_and_restoring_puts_it_back(tmp_path):
    root = fake_sysfs(tmp_path)
    before = ksm.turn_on(root)
    assert before == {"run": 0, "pages_to_scan": 100, "sleep_millisecs": 20}
    assert ksm.settings(root) == ksm.LAB_RATE
    assert ksm.turn_on(root) is None  # already on at the lab rate: nothing to restore later
    ksm.apply(before, root)
    assert ksm.settings(root) == before


def test_a_kernel_without_ksm_is_left_alone(tmp_path):
    assert ksm.turn_on(tmp_path / "missing") is None and not ksm.available(tmp_path / "missing")


def test_saved_memory_counts_the_pages_that_share(tmp_path):
    root = fake_sysfs(tmp_path, run=1, sharing=262144)
    assert ksm.saved_mib(root) == 262144 * 4096 // (1 << 20)  # 4 KiB pages: 1 GiB
    assert ksm.reading(root) == {"on": True, "saved_mib": 1024} and ksm.reading(tmp_path / "missing") is None
