"""Options shared by several commands: --db, the model and filter options, the output-format actions, and what
they name (``Filters``, the model)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rsretrieve.cli.arg_types import bbox, db_location, iso_date
from rsretrieve.errors import UserError

RANDOM_WEIGHTS_WARNING = "warning: random weights: results are meaningless (for tests and speed runs only)"


class CliError(UserError):
    """A bad argument found after parsing; one line for the user."""


def add_db_option(parser: argparse.ArgumentParser, **kwargs: object) -> None:
    """--db (a folder or an s3:// URI) and --cache-dir (where the local copy of an s3:// index lives)."""
    kwargs.setdefault("help", "index folder or s3:// URI")
    parser.add_argument("--db", type=db_location, **kwargs)  # type: ignore[arg-type]
    parser.add_argument(
        "--cache-dir", type=Path, help="--db s3://...: local copy's folder (~/.cache/rsretrieve; docs/remote.md)"
    )


def add_model_options(parser: argparse.ArgumentParser, default: str | None) -> None:
    """--model (``default`` unless given), --checkpoint, --random-weights, --device."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=default, help="registered name or open_clip architecture")
    group.add_argument("--checkpoint", type=Path, help="local weights file instead of the Hugging Face Hub")
    group.add_argument(
        "--random-weights", action="store_true", help="random weights (tests, speed runs; meaningless results)"
    )
    group.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")


def load_model(args: argparse.Namespace, name: str):
    """The model named by ``name`` and the model options (a warning on stderr for random weights)."""
    from rsretrieve import models

    if args.random_weights:
        print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
    return models.load_model(name, args.checkpoint, args.device, args.random_weights)


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    """--bbox, --within, --start, --end (see ``query_filters``)."""
    parser.add_argument("--bbox", type=bbox, help="minx,miny,maxx,maxy in WGS84 degrees (intersects)")
    parser.add_argument(
        "--within", type=Path, metavar="AREA", help="GeoJSON/GeoParquet (Multi)Polygon in WGS84: footprints intersect"
    )
    parser.add_argument("--start", type=iso_date, help="earliest acquisition date YYYY-MM-DD")
    parser.add_argument("--end", type=iso_date, help="latest acquisition date YYYY-MM-DD")


def query_filters(args: argparse.Namespace):
    """The ``Filters`` of --bbox, --within, --start, --end."""
    from rsretrieve.query import Filters

    within = None
    if getattr(args, "within", None) is not None:
        from rsretrieve.geometry import polygonal, read_features

        features = read_features(args.within)
        if not features:
            raise CliError(f"--within {args.within} has no features")
        import shapely

        within = polygonal(shapely.union_all([feature.geometry for feature in features]), f"--within {args.within}")
    return Filters(args.bbox, args.start, args.end, within)


class StdoutFormat(argparse.Action):
    """``--json``: results on stdout in that format (one stdout format per command)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        chosen = getattr(namespace, self.dest, None)
        if chosen is not None and chosen != option_string.lstrip("-"):
            parser.error(f"{option_string}: the results already go to stdout as --{chosen}")
        setattr(namespace, self.dest, option_string.lstrip("-"))


class FormatOrFile(StdoutFormat):
    """``--geojson [FILE]``, ``--csv [FILE]``, ``--geoparquet FILE``: stdout in that format, or streamed to FILE
    (``outputs``: (format, path) pairs; several files may be written in one pass)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if values is None:
            return super().__call__(parser, namespace, values, option_string)
        outputs = list(getattr(namespace, "outputs", None) or [])
        namespace.outputs = [*outputs, (option_string.lstrip("-"), Path(values))]
