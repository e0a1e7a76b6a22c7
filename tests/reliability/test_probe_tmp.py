def test_probe(bad_archive, tmp_path, capsys):
    from rsretrieve import cli
    import shutil
    shutil.copytree("/work/shared/data/geotiff/misc", bad_archive / "misc", dirs_exist_ok=True)
    rc = cli.main(["index", str(bad_archive), "--db", str(tmp_path / "db"), "--model", "tiny-test", "--random-weights", "--chip-size", "64", "--workers", "0", "--quiet", "--json"])
    out = capsys.readouterr()
    print(rc, out.err, out.out[:300])
    from rsretrieve.store import ChipStore
    from collections import Counter
    print(Counter(ChipStore(tmp_path / "db").column("path").to_pylist()))
