"""SERM feature definitions: entities `query` and `document`; views over query, document and
query-document pair features. Feast executes this file on apply: definitions only, no data
code. Offline data lives in the workspace's `.serm/feast/offline/` (written by
`serm.featurestore`)."""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

OFFLINE = Path(__file__).resolve().parents[1] / ".serm" / "feast" / "offline"
TTL = timedelta(days=3650)

query = Entity(name="query", join_keys=["query_id"], value_type=ValueType.STRING,
               description="a search query as it arrives in the stream")
document = Entity(name="document", join_keys=["doc_id"], value_type=ValueType.STRING,
                  description="a document (paragraph, product) that can be ranked")

query_source = FileSource(name="queries", path=str(OFFLINE / "queries.parquet"), timestamp_field="event_timestamp")
document_source = FileSource(name="documents", path=str(OFFLINE / "documents.parquet"),
                             timestamp_field="event_timestamp")
pair_source = FileSource(name="pairs", path=str(OFFLINE / "pairs.parquet"), timestamp_field="event_timestamp")

query_features = FeatureView(
    name="query_features", entities=[query], ttl=TTL, source=query_source, online=True,
    schema=[Field(name="query", dtype=String), Field(name="locale", dtype=String),
            Field(name="query_chars", dtype=Int64), Field(name="query_tokens", dtype=Int64),
            Field(name="impressions", dtype=Int64), Field(name="clicks", dtype=Int64),
            Field(name="ctr", dtype=Float64)])

document_features = FeatureView(
    name="document_features", entities=[document], ttl=TTL, source=document_source, online=True,
    schema=[Field(name="title", dtype=String), Field(name="text", dtype=String), Field(name="locale", dtype=String),
            Field(name="title_chars", dtype=Int64), Field(name="text_chars", dtype=Int64)])

pair_features = FeatureView(
    name="pair_features", entities=[query, document], ttl=TTL, source=pair_source, online=True,
    schema=[Field(name="impressions", dtype=Int64), Field(name="clicks", dtype=Int64),
            Field(name="mean_position", dtype=Float64), Field(name="mean_dwell_s", dtype=Float64),
            Field(name="lexical_overlap", dtype=Float64)])
