import multiprocessing

from restyle.cache import Cache


def _writer(path, worker, n):
    cache = Cache(path)
    for i in range(n):
        cache.put(f"{worker}/{i}", "openai", "m", f"reply {worker} {i}", 3, 5)
        if i % 10 == 0:  # readers interleave with writers, as several Snakemake jobs would
            cache.get_many([f"{worker}/{j}" for j in range(i)])
    cache.close()


def test_several_processes_write_one_cache_at_once(tmp_path):
    path = tmp_path / "cache.sqlite"
    Cache(path).close()
    workers = [multiprocessing.get_context("spawn").Process(target=_writer, args=(path, w, 150))
               for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]
    found = Cache(path).get_many([f"{w}/{i}" for w in range(4) for i in range(150)])
    assert len(found) == 600
    assert found["3/149"].text == "reply 3 149" and found["0/0"].completion_tokens == 5
