"""pgagent's public evaluation suite (``make eval``; docs/evals.md): 47 questions over six tables
of vega-datasets (a PyPI package that ships its data offline) that the demo does not use:
iris, barley, wheat, driving, iowa-electricity and us-employment, loaded into the schema
``evaldata``. Every reference answer is a query (``reference_sql``), so the expected value is
computed from the data when a case is scored, never typed in by hand.

The cases cover counts, filters, group-by maxima, averages with rounding, percentages, dates,
NULL handling (wheat has years without wages), text answers, two-step questions and questions
that need no tool. Nothing in pgagent's loop or tools refers to them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import psycopg

SCHEMA = "evaldata"

DDL = """
CREATE SCHEMA IF NOT EXISTS evaldata;
CREATE TABLE evaldata.iris (sepal_length real, sepal_width real, petal_length real, petal_width real, species text);
CREATE TABLE evaldata.barley (yield real, variety text, year integer, site text);
CREATE TABLE evaldata.wheat (year integer, wheat real, wages real);
CREATE TABLE evaldata.driving (side text, year integer, miles integer, gas real);
CREATE TABLE evaldata.iowa_electricity (year date, source text, net_generation integer);
CREATE TABLE evaldata.us_employment (month date, nonfarm integer, private integer, government integer,
                                     construction integer, manufacturing integer, nonfarm_change integer);
GRANT USAGE ON SCHEMA evaldata TO pgagent_sandbox;
GRANT SELECT ON ALL TABLES IN SCHEMA evaldata TO pgagent_sandbox;
"""

#: (table, column comment for tool authors) used by the baseline tool description
TABLES = ["iris", "barley", "wheat", "driving", "iowa_electricity", "us_employment"]


def data_dir() -> Path:
    import vega_datasets
    return Path(vega_datasets.__file__).parent / "_data"


def load(conn: psycopg.Connection) -> dict[str, int]:
    """Create evaldata's tables (as a superuser) and load them; returns row counts."""
    conn.execute(DDL)
    d = data_dir()
    rows: dict[str, list[tuple[Any, ...]]] = {
        "iris": [(r["sepalLength"], r["sepalWidth"], r["petalLength"], r["petalWidth"], r["species"])
                 for r in json.loads((d / "iris.json").read_text())],
        "barley": [(r["yield"], r["variety"], r["year"], r["site"]) for r in json.loads((d / "barley.json").read_text())],
        "wheat": [(int(r["year"]), r.get("wheat"), r.get("wages")) for r in json.loads((d / "wheat.json").read_text())],
        "driving": [(r["side"], r["year"], r["miles"], r["gas"]) for r in json.loads((d / "driving.json").read_text())],
        "iowa_electricity": [(r["year"], r["source"], int(r["net_generation"]))
                             for r in csv.DictReader((d / "iowa-electricity.csv").open())],
        "us_employment": [(r["month"], int(r["nonfarm"]), int(r["private"]), int(r["government"]),
                           int(r["construction"]), int(r["manufacturing"]), int(r["nonfarm_change"]))
                          for r in csv.DictReader((d / "us-employment.csv").open())],
    }
    out = {}
    for table, data in rows.items():
        with conn.cursor().copy(f"COPY evaldata.{table} FROM STDIN") as cp:
            for r in data:
                cp.write_row(r)
        out[table] = len(data)
    conn.execute("ANALYZE evaldata.iris, evaldata.barley, evaldata.wheat, evaldata.driving, "
                 "evaldata.iowa_electricity, evaldata.us_employment")
    return out


# (name, question, reference_sql, scoring, decimals, tags); scoring numeric without decimals = exact number
N, C = "numeric", "contains"
CASES: list[tuple[str, str, str, str, int | None, list[str]]] = [
    # iris
    ("iris_count", "How many flowers are in the iris table?", "SELECT count(*) FROM iris", N, None, ["count"]),
    ("iris_species", "How many different species are in the iris table?", "SELECT count(DISTINCT species) FROM iris",
     N, None, ["count"]),
    ("iris_setosa_petal", "What is the average petal length of setosa flowers? Round to 2 decimals.",
     "SELECT round(avg(petal_length)::numeric, 2) FROM iris WHERE species = 'setosa'", N, 2, ["average"]),
    ("iris_longest_sepal", "Which species has the flower with the longest sepal?",
     "SELECT species FROM iris ORDER BY sepal_length DESC LIMIT 1", C, None, ["max", "text"]),
    ("iris_wide_petals", "How many iris flowers have a petal width greater than 2.0?",
     "SELECT count(*) FROM iris WHERE petal_width > 2.0", N, None, ["filter", "count"]),
    ("iris_pct_long", "What percentage of virginica flowers have a sepal length above 6.5? Round to 1 decimal.",
     "SELECT round(100.0 * avg((sepal_length > 6.5)::int), 1) FROM iris WHERE species = 'virginica'", N, 1,
     ["percentage"]),
    ("iris_widest_species", "Which species has the largest average sepal width?",
     "SELECT species FROM iris GROUP BY species ORDER BY avg(sepal_width) DESC LIMIT 1", C, None, ["group-by", "text"]),
    ("iris_min_petal", "What is the shortest petal length in the iris data?", "SELECT min(petal_length) FROM iris",
     N, 1, ["min"]),
    # barley
    ("barley_rows", "How many yield records does the barley table hold?", "SELECT count(*) FROM barley", N, None,
     ["count"]),
    ("barley_sites", "How many different sites are in the barley data?", "SELECT count(DISTINCT site) FROM barley",
     N, None, ["count"]),
    ("barley_best_site_1932", "Which site had the highest total barley yield in 1932?",
     "SELECT site FROM barley WHERE year = 1932 GROUP BY site ORDER BY sum(yield) DESC LIMIT 1", C, None,
     ["group-by", "max", "text"]),
    ("barley_avg_1931", "What was the average barley yield in 1931? Round to 1 decimal.",
     "SELECT round(avg(yield)::numeric, 1) FROM barley WHERE year = 1931", N, 1, ["average"]),
    ("barley_best_variety", "Which barley variety had the highest average yield over both years?",
     "SELECT variety FROM barley GROUP BY variety ORDER BY avg(yield) DESC LIMIT 1", C, None, ["group-by", "text"]),
    ("barley_morris_change", "At the Morris site, by how much did the total barley yield change from 1931 to 1932 "
     "(1932 minus 1931)? Round to 1 decimal.",
     "SELECT round((sum(yield) FILTER (WHERE year = 1932) - sum(yield) FILTER (WHERE year = 1931))::numeric, 1) "
     "FROM barley WHERE site = 'Morris'", N, 1, ["two-step"]),
    ("barley_max_yield", "What was the largest single yield in the barley data? Round to 2 decimals.",
     "SELECT round(max(yield)::numeric, 2) FROM barley", N, 2, ["max"]),
    ("barley_varieties", "How many barley varieties are there?", "SELECT count(DISTINCT variety) FROM barley", N, None,
     ["count"]),
    # wheat: two years have no wages (NULL)
    ("wheat_rows", "How many years are recorded in the wheat table?", "SELECT count(*) FROM wheat", N, None, ["count"]),
    ("wheat_missing_wages", "In how many years of the wheat table are the wages missing?",
     "SELECT count(*) FROM wheat WHERE wages IS NULL", N, None, ["null", "count"]),
    ("wheat_top_wages", "In which year were wages highest in the wheat table?",
     "SELECT year FROM wheat WHERE wages IS NOT NULL ORDER BY wages DESC LIMIT 1", N, None, ["null", "max"]),
    ("wheat_top_price", "In which year was the price of wheat highest?",
     "SELECT year FROM wheat ORDER BY wheat DESC LIMIT 1", N, None, ["max"]),
    ("wheat_avg_wages", "What were the average wages over the years whose wages are known? Round to 2 decimals.",
     "SELECT round(avg(wages)::numeric, 2) FROM wheat", N, 2, ["null", "average"]),
    ("wheat_first_year", "What is the earliest year in the wheat table?", "SELECT min(year) FROM wheat", N, None,
     ["dates"]),
    ("wheat_price_1700", "What was the price of wheat in 1700?", "SELECT wheat FROM wheat WHERE year = 1700", N, 2,
     ["filter"]),
    ("wheat_last_wages", "What is the last year of the wheat table that has wages recorded?",
     "SELECT max(year) FROM wheat WHERE wages IS NOT NULL", N, None, ["null", "dates"]),
    # driving
    ("driving_rows", "How many years does the driving table cover?", "SELECT count(*) FROM driving", N, None,
     ["count"]),
    ("driving_most_miles", "In which year were the most miles driven per person?",
     "SELECT year FROM driving ORDER BY miles DESC LIMIT 1", N, None, ["max"]),
    ("driving_gas_1980", "What was the gas price in 1980?", "SELECT gas FROM driving WHERE year = 1980", N, 2,
     ["filter"]),
    ("driving_gas_2000s", "What was the average gas price from 2000 to 2009? Round to 2 decimals.",
     "SELECT round(avg(gas)::numeric, 2) FROM driving WHERE year BETWEEN 2000 AND 2009", N, 2, ["average", "dates"]),
    ("driving_growth", "How many more miles per person were driven in 2010 than in 1956?",
     "SELECT max(miles) FILTER (WHERE year = 2010) - max(miles) FILTER (WHERE year = 1956) FROM driving", N, None,
     ["two-step"]),
    ("driving_cheapest", "In which year was the gas price lowest?", "SELECT year FROM driving ORDER BY gas LIMIT 1",
     N, None, ["min"]),
    # iowa electricity
    ("iowa_sources", "How many different energy sources are in the Iowa electricity data?",
     "SELECT count(DISTINCT source) FROM iowa_electricity", N, None, ["count"]),
    ("iowa_renewables_2017", "How much net generation came from renewables in Iowa in 2017?",
     "SELECT net_generation FROM iowa_electricity WHERE source = 'Renewables' AND extract(year FROM year) = 2017",
     N, None, ["filter", "dates"]),
    ("iowa_top_2001", "Which source generated the most electricity in Iowa in 2001?",
     "SELECT source FROM iowa_electricity WHERE extract(year FROM year) = 2001 ORDER BY net_generation DESC LIMIT 1",
     C, None, ["max", "text"]),
    ("iowa_renewable_share", "What share of Iowa's total net generation in 2017 came from renewables, in percent? "
     "Round to 1 decimal.",
     "SELECT round(100.0 * sum(net_generation) FILTER (WHERE source = 'Renewables') / sum(net_generation), 1) "
     "FROM iowa_electricity WHERE extract(year FROM year) = 2017", N, 1, ["percentage", "two-step"]),
    ("iowa_total_2010", "What was Iowa's total net generation in 2010, all sources together?",
     "SELECT sum(net_generation) FROM iowa_electricity WHERE extract(year FROM year) = 2010", N, None, ["filter"]),
    ("iowa_last_year", "What is the most recent year in the Iowa electricity data?",
     "SELECT extract(year FROM max(year))::int FROM iowa_electricity", N, None, ["dates"]),
    ("iowa_nuclear_peak", "In which year did nuclear energy generate the most in Iowa?",
     "SELECT extract(year FROM year)::int FROM iowa_electricity WHERE source = 'Nuclear Energy' "
     "ORDER BY net_generation DESC LIMIT 1", N, None, ["max", "dates"]),
    # us employment
    ("emp_months", "How many months of data does the US employment table have?", "SELECT count(*) FROM us_employment",
     N, None, ["count"]),
    ("emp_jan_2006", "What was total nonfarm employment in January 2006?",
     "SELECT nonfarm FROM us_employment WHERE month = '2006-01-01'", N, None, ["dates", "filter"]),
    ("emp_gov_peak", "In which month was government employment highest? Answer with the month as YYYY-MM.",
     "SELECT to_char(month, 'YYYY-MM') FROM us_employment ORDER BY government DESC LIMIT 1", C, None,
     ["dates", "max", "text"]),
    ("emp_falls", "In how many months did nonfarm employment fall (nonfarm_change below zero)?",
     "SELECT count(*) FROM us_employment WHERE nonfarm_change < 0", N, None, ["filter", "count"]),
    ("emp_construction_2009", "What was the average construction employment in 2009? Round to a whole number.",
     "SELECT round(avg(construction)) FROM us_employment WHERE extract(year FROM month) = 2009", N, 0,
     ["average", "dates"]),
    ("emp_worst_month", "Which month had the largest fall in nonfarm employment? Answer with the month as YYYY-MM.",
     "SELECT to_char(month, 'YYYY-MM') FROM us_employment ORDER BY nonfarm_change LIMIT 1", C, None,
     ["dates", "min", "text"]),
]

#: (name, question, expected, scoring, rubric): questions that need no tool
NO_TOOL: list[tuple[str, str, str | None, str, str | None]] = [
    ("hello", "Hello! Who are you?", None, "llm",
     "Right: any reply that greets the user or says who or what the assistant is (any name or maker). "
     "Wrong: only a reply with neither a greeting nor an introduction, such as a number or an error."),
    ("arithmetic", "What is 12 times 12?", "144", "numeric", None),
    ("sql_keyword", "In SQL, which keyword removes duplicate rows from a query result? Answer with the keyword.",
     "DISTINCT", "contains", None),
    ("capital", "What is the capital of France?", "Paris", "contains", None),
]


def define(conn: psycopg.Connection, suite: str = "public") -> int:
    """Create the suite through pgagent's SQL API (as an operator of the tenant); returns suite_id."""
    sid = conn.execute("SELECT pgagent.create_eval_suite(%s, 'pgagent public suite: vega-datasets tables', "
                       "config => '{\"search_path\": \"evaldata\"}')", [suite]).fetchone()[0]
    for name, q, ref, scoring, dec, tags in CASES:
        conn.execute("SELECT pgagent.add_eval_case(%s, %s, reference_sql => %s, scoring => %s, decimals => %s, "
                     "name => %s, tags => %s)", [suite, q, ref, scoring, dec, name, tags])
    for name, q, expected, scoring, rubric in NO_TOOL:
        conn.execute("SELECT pgagent.add_eval_case(%s, %s, expected => %s, scoring => %s, rubric => %s, "
                     "needs_tool => false, name => %s, tags => '{no-tool}')", [suite, q, expected, scoring, rubric, name])
    return sid


def tables_note(conn: psycopg.Connection) -> str:
    """What a tool author would write in the sql tool's description: table names and columns with types."""
    rows = conn.execute("""SELECT c.relname, string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', '
                                                     ORDER BY a.attnum)
                             FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
                            WHERE c.relnamespace = 'evaldata'::regnamespace AND c.relkind = 'r'
                            GROUP BY c.relname ORDER BY c.relname""").fetchall()
    return "Tables: " + "; ".join(f"{t}({cols})" for t, cols in rows) + "."
