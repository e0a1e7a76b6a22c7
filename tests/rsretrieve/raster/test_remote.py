"""Remote sources (rsretrieve/raster/remote.py): URIs, GDAL settings, s3:// listing, and COGs read window by window
from a loopback moto S3 server and a Range-capable HTTP server exactly as from local disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rsretrieve.raster import ChipReader, SourceError, find_sources, plan_scene
from rsretrieve.raster.remote import expand_remote, is_remote, remote_options, source_name, vsi_path


def test_uris_map_to_gdal_virtual_file_systems() -> None:
    assert vsi_path("s3://bucket/a/b.tif") == "/vsis3/bucket/a/b.tif"
    assert vsi_path("gs://bucket/b.tif") == "/vsigs/bucket/b.tif"
    assert vsi_path("az://container/b.tif") == "/vsiaz/container/b.tif"
    assert vsi_path("https://h.org/c/s.tif?sig=1") == "/vsicurl/https://h.org/c/s.tif?sig=1"
    assert vsi_path(Path("/data/a.tif")) == Path("/data/a.tif") and vsi_path("/data/a.tif") == "/data/a.tif"
    assert is_remote("HTTP://h/a.tif") and not is_remote("/data/s3://x") and not is_remote(Path("s3://b/k"))
    assert source_name("https://h.org/c/scene_20200101.tif?sig=1") == "scene_20200101.tif"


def test_remote_options_map_the_aws_endpoint_and_yield_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.delenv("GDAL_HTTP_MAX_RETRY", raising=False)
    options = remote_options()
    assert options["AWS_S3_ENDPOINT"] == "127.0.0.1:9000" and options["AWS_HTTPS"] == "NO"
    assert options["AWS_VIRTUAL_HOSTING"] == "FALSE" and options["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
    assert options["GDAL_HTTP_MAX_RETRY"] == "4" and int(options["VSI_CACHE_SIZE"]) <= 64 << 20
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://minio.example.org")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "9")
    options = remote_options()
    assert options["AWS_HTTPS"] == "YES" and "GDAL_HTTP_MAX_RETRY" not in options  # the environment's own wins
    assert ".tif" in remote_options("https://h.org/a.TIF?sig=1")["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"]
    assert "CPL_VSIL_CURL_ALLOWED_EXTENSIONS" not in remote_options("https://h.org/download?id=42")


def test_s3_prefixes_and_patterns_are_listed(s3_env) -> None:
    scenes = ["s3://archive/scenes/1985.tif", "s3://archive/scenes/1990.tif", "s3://archive/scenes/cogeo.tif"]
    assert find_sources(["s3://archive/scenes/"]) == scenes
    assert find_sources(["s3://archive/scenes", "s3://archive/scenes/1985.tif"]) == scenes  # unique
    assert find_sources(["s3://archive/scenes/19*.tif"]) == scenes[:2]
    assert find_sources(["s3://archive/**/cogeo.tif"]) == scenes[2:]
    assert expand_remote("https://h.org/a/b.tif") == ["https://h.org/a/b.tif"]  # named objects are not checked
    with pytest.raises(SourceError, match=r"^s3://missing-bucket/x/: cannot list \(NoSuchBucket"):
        find_sources(["s3://missing-bucket/x/"])
    with pytest.raises(SourceError, match="no object matches"):
        find_sources(["s3://archive/scenes/*.png"])
    with pytest.raises(SourceError, match="cannot list gs:// folders"):
        find_sources(["gs://bucket/scenes/"])
    with pytest.raises(SourceError, match="no images found"):
        find_sources(["s3://archive/nothing-here/"])


def test_s3_listing_follows_every_page(s3_env, monkeypatch: pytest.MonkeyPatch) -> None:
    from rsretrieve.raster import remote

    requests = s3_env.stats.requests
    monkeypatch.setattr(remote, "LIST_PAGE_SIZE", 1)
    assert len(find_sources(["s3://archive/scenes/"])) == 3
    assert s3_env.stats.requests - requests >= 3  # one page per key


def test_local_and_remote_sources_mix(s3_env, cog_folder: Path) -> None:
    found = find_sources([cog_folder / "1985.tif", "s3://archive/scenes/1990.tif"])
    assert found == [cog_folder / "1985.tif", "s3://archive/scenes/1990.tif"]
    assert isinstance(found[0], Path) and isinstance(found[1], str)


def _plans_and_pixels(source: str | Path) -> tuple:
    plan = plan_scene(source, chip_size=64)
    reader = ChipReader()
    try:
        return plan, [reader.read(plan, chip) for chip in plan.chips]
    finally:
        reader.close()


@pytest.mark.parametrize("name", ["1985.tif", "cogeo.tif"])
def test_s3_and_http_cogs_read_as_the_local_files(name: str, cog_folder: Path, s3_env, http_server) -> None:
    import boto3

    local, local_pixels = _plans_and_pixels(cog_folder / name)
    key = f"read-test/{name}"  # not read before in this process: GDAL's cache of downloaded ranges starts empty
    boto3.client("s3", endpoint_url=s3_env.url).upload_file(str(cog_folder / name), "archive", key)
    s3_env.stats.reset()
    for uri in (f"s3://archive/{key}", f"{http_server.url}/{name}"):
        plan, pixels = _plans_and_pixels(uri)
        assert plan.path == uri and all(chip.path == uri for chip in plan.chips)  # the URI as given
        assert [c.window for c in plan.chips] == [c.window for c in local.chips]
        assert [c.bbox for c in plan.chips] == [c.bbox for c in local.chips]
        assert [c.footprint for c in plan.chips] == [c.footprint for c in local.chips]
        assert [c.date for c in plan.chips] == [c.date for c in local.chips]
        assert plan.stretch == local.stretch and plan.bands == local.bands
        assert {c.id for c in plan.chips}.isdisjoint(c.id for c in local.chips)  # ids hash the URI
        for mine, theirs in zip(pixels, local_pixels, strict=True):
            np.testing.assert_array_equal(mine, theirs)
    size = (cog_folder / name).stat().st_size
    assert 0 < s3_env.stats.bytes <= 1.2 * size  # ranges: never much more than the file itself
    assert s3_env.stats.requests <= 10  # a handful of merged ranges, not one request per chip


def test_remote_faults_are_one_line_source_errors(s3_env, http_server, cog_folder: Path, tmp_path: Path) -> None:
    from tests.servers import upload

    data = (cog_folder / "1985.tif").read_bytes()
    (tmp_path / "faults").mkdir()
    (tmp_path / "faults" / "denied.tif").write_bytes(data)
    (tmp_path / "faults" / "truncated.tif").write_bytes(data[: len(data) // 3])
    upload(tmp_path / "faults", "archive", s3_env.env(), prefix="faults/")
    s3_env.deny.add("/archive/faults/denied.tif")
    try:
        with pytest.raises(SourceError, match=r"^s3://archive/faults/denied\.tif: access denied \(403\)"):
            plan_scene("s3://archive/faults/denied.tif", 64)
        with pytest.raises(SourceError, match=r"^s3://archive/faults/gone\.tif: no such object \(404\)$"):
            plan_scene("s3://archive/faults/gone.tif", 64)
        with pytest.raises(SourceError, match=rf"^{http_server.url}/gone\.tif: no such object \(404\)$"):
            plan_scene(f"{http_server.url}/gone.tif", 64)
        plan = plan_scene("s3://archive/faults/truncated.tif", 64)  # the header is whole; the tiles are not
        reader = ChipReader()
        with pytest.raises(SourceError, match=r"^s3://archive/faults/truncated\.tif: cannot read window") as error:
            for chip in plan.chips:
                reader.read(plan, chip)
        reader.close()
        assert "\n" not in str(error.value)
    finally:
        s3_env.deny.discard("/archive/faults/denied.tif")


def test_urls_without_an_image_extension_are_read(cog_folder: Path, tmp_path: Path) -> None:
    """A download URL (no .tif in its name, a query) is not refused by GDAL's allowed-extensions filter."""
    from tests.servers import RangeServer

    (tmp_path / "download").write_bytes((cog_folder / "1985.tif").read_bytes())
    with RangeServer(tmp_path) as server:
        plan = plan_scene(f"{server.url}/download?id=42", 64)
        assert len(plan.chips) == 66 and plan.chips[0].path == f"{server.url}/download?id=42"
        assert server.stats.bytes < (tmp_path / "download").stat().st_size  # the header only, not the file


def test_query_images_may_be_uris(s3_env, http_server, cog_folder: Path) -> None:
    """``query --image s3://...``: the image is read decimated through GDAL, as a local one."""
    from rsretrieve.query import Part
    from rsretrieve.search import QueryError, query_pixels

    local = query_pixels(Part("image", str(cog_folder / "cogeo.tif")))
    for uri in ("s3://archive/scenes/cogeo.tif", f"{http_server.url}/cogeo.tif?x=1"):
        np.testing.assert_array_equal(query_pixels(Part("image", uri)), local)
    assert Part("image", f"{http_server.url}/cogeo.tif?x=1").describe() == "images like cogeo.tif"
    with pytest.raises(QueryError, match=r"cannot read query image s3://archive/scenes/none\.tif: no such object"):
        query_pixels(Part("image", "s3://archive/scenes/none.tif"))
