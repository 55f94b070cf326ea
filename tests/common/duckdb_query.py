"""Runs one SQL query with DuckDB (the engine a user of the archives would
pick) and prints its rows as a JSON array of arrays (values DuckDB cannot
put in JSON as their text)."""
import json
import sys

import duckdb

rows = duckdb.connect().execute(sys.argv[1]).fetchall()
print(json.dumps(rows, default=str))
