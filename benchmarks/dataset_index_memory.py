"""Memory of a large annotation index under dataloader workers.

    python benchmarks/dataset_index_memory.py --records 1000000 --workers 4

Writes a sample Osprey set and an N-record ``osprey_conversation`` file (the
records cycle over the sample records), then, each in a fresh process,
builds ``OspreyDataset`` with an empty pipeline and iterates every index in
a shuffled order through a ``DataLoader`` with W workers, in two modes:

* ``serialized`` (ours): records pickled into one numpy byte buffer plus
  offsets as they are parsed (``Sa2VABaseDataset``), shared by the forked
  workers;
* ``list``: the plain list of dicts (mmengine ``serialize_data=False``), what
  a loader that keeps Python objects does; workers copy the pages they
  touch (reference counts) and grow.

Reported per mode: index build time, main-process RSS after the build,
index bytes per record, and the peak over the run of the whole process tree
(sum of RSS, which counts shared pages once per process, and sum of PSS,
which splits them fairly).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import threading
import time

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)


def _tree_memory(pid: int) -> tuple[int, int]:
    import psutil
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0
    rss = pss = 0
    for p in procs:
        try:
            info = p.memory_full_info()
            rss += info.rss
            pss += getattr(info, 'pss', info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return rss, pss


def run_child(args) -> None:
    """Build the dataset and iterate it (runs in a fresh process)."""
    import numpy as np
    import psutil
    import torch
    from torch.utils.data import DataLoader

    from projects.sa2va.datasets.visual_prompt import OspreyDataset
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    t0 = time.perf_counter()
    ds = OspreyDataset(data_root=args.data_root, ann_file=args.ann_file,
                       kind='conversation', pipeline=[],
                       serialize_data=args.mode == 'serialized')
    build_s = time.perf_counter() - t0
    import gc
    gc.collect()
    rss_built = proc.memory_info().rss
    n = len(ds)
    index_bytes = ds.index_nbytes() if args.mode == 'serialized' else None
    order = torch.from_numpy(np.random.default_rng(0).permutation(n))
    loader = DataLoader(ds, batch_size=512, sampler=order.tolist(),
                        num_workers=args.workers, collate_fn=len,
                        persistent_workers=False)
    t0 = time.perf_counter()
    seen = sum(loader)
    iter_s = time.perf_counter() - t0
    assert seen == n, (seen, n)
    print(json.dumps(dict(
        mode=args.mode, records=n, build_s=round(build_s, 1),
        iterate_s=round(iter_s, 1),
        main_rss_after_build_mb=round(rss_built / 2**20),
        index_delta_bytes_per_record=round((rss_built - rss0) / n, 1),
        index_nbytes_per_record=(round(index_bytes / n, 1)
                                 if index_bytes else None))))


def measure(args, mode: str) -> dict:
    cmd = [sys.executable, __file__, '--child', '--mode', mode,
           '--data-root', args.data_root, '--ann-file', args.ann_file,
           '--workers', str(args.workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS='1'))
    peak = [0, 0]

    def watch():
        while proc.poll() is None:
            rss, pss = _tree_memory(proc.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
            time.sleep(0.25)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f'{mode} run failed (exit {proc.returncode})')
    result = json.loads(out.strip().splitlines()[-1])
    result['peak_tree_rss_mb'] = round(peak[0] / 2**20)
    result['peak_tree_pss_mb'] = round(peak[1] / 2**20)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--records', type=int, default=1_000_000)
    parser.add_argument('--workers', type=int, default=4)
    parser.add_argument('--root', default='work_dirs/bench_index_data')
    parser.add_argument('--modes', nargs='+', default=['serialized', 'list'])
    parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--mode', help=argparse.SUPPRESS)
    parser.add_argument('--data-root', help=argparse.SUPPRESS)
    parser.add_argument('--ann-file', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args)
        return

    from projects.sa2va.sample_data import make_sample_data
    from projects.sa2va.sample_data.large import write_large_osprey
    root = osp.abspath(args.root)
    if not osp.exists(osp.join(root, 'manifest.json')):
        make_sample_data(root, families=['visual_prompt'])
    t0 = time.perf_counter()
    ann = write_large_osprey(root, args.records)
    print(f'wrote {ann} ({osp.getsize(ann) / 2**20:.0f} MB) in '
          f'{time.perf_counter() - t0:.1f} s')
    args.data_root = osp.join(root, 'osprey-724k')
    args.ann_file = str(ann)
    rows = [measure(args, m) for m in args.modes]
    keys = ['mode', 'records', 'build_s', 'iterate_s',
            'main_rss_after_build_mb', 'index_delta_bytes_per_record',
            'index_nbytes_per_record', 'peak_tree_rss_mb', 'peak_tree_pss_mb']
    print('| ' + ' | '.join(keys) + ' |')
    print('|' + '---|' * len(keys))
    for r in rows:
        print('| ' + ' | '.join(str(r.get(k)) for k in keys) + ' |')


if __name__ == '__main__':
    main()
