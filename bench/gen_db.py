#!/usr/bin/env python3
"""Generate the benchmark database in the lab's PostgreSQL 15.

A separate database (``lifeboat_bench``; never the shared ``appdb``) shaped
like the application's: ``users``, ``videos`` (storage paths, Mux ids),
``generated_videos``, ``analytics.events``, with mixed-entropy text (repetitive
prose and random hex), jsonb, uuids, timestamps, inet, bytea, foreign keys and
indexes. Rows are generated server-side (``INSERT ... SELECT`` over
``generate_series``), with a fixed random seed, so a run is fast and
repeatable.

    .venv/bin/python bench/gen_db.py --scale 1.0      # about 1 GB (pg_database_size): lifeboat_bench
    .venv/bin/python bench/gen_db.py --scale 0.05     # quick: lifeboat_bench_0_05
    .venv/bin/python bench/gen_db.py --force          # rebuild even if present at this scale
    .venv/bin/python bench/gen_db.py --scale 0.05 --drop   # remove it

Idempotent: a database already generated at the same scale (and generator
version) is left alone.
"""
from __future__ import annotations

import argparse
import sys
import time

import benchlib

GENERATOR_VERSION = 2

# rows per 1.0 of scale (calibrated so that --scale 1.0 gives about 1 GB, indexes included)
USERS = 150_000
VIDEOS = 330_000
GENERATED = 100_000
EVENTS = 1_300_000

_WORDS = ("the video upload render stream user channel playlist comment share like view frame codec "
          "bitrate thumbnail caption subtitle audio track scene camera light studio edit export draft "
          "publish schedule private public audience creator episode season trailer preview highlight "
          "clip story moment travel music cooking gaming science history tutorial review unboxing "
          "interview live replay sunset ocean mountain city night morning coffee team launch update").split()


def _lorem(n_words: int = 900) -> str:
    # a deterministic pseudo-prose block; rows take random slices of it (repetitive, compressible text)
    out, x = [], 12345
    for i in range(n_words):
        x = (1103515245 * x + 12345) % (1 << 31)
        w = _WORDS[x % len(_WORDS)]
        out.append(w.capitalize() + "." if i % 13 == 12 else w)
    return " ".join(out)


DDL = """
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE SCHEMA IF NOT EXISTS analytics;
CREATE TABLE bench_meta (scale numeric NOT NULL, generator_version int NOT NULL,
                         generated_at timestamptz NOT NULL DEFAULT now(), seconds numeric);
CREATE TABLE users (
    id            bigint PRIMARY KEY,
    uuid          uuid NOT NULL DEFAULT gen_random_uuid(),
    email         text NOT NULL,
    display_name  text NOT NULL,
    bio           text,
    settings      jsonb NOT NULL DEFAULT '{}'::jsonb,
    plan          text NOT NULL DEFAULT 'free',
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz
);
CREATE TABLE videos (
    id              bigint PRIMARY KEY,
    uuid            uuid NOT NULL DEFAULT gen_random_uuid(),
    user_id         bigint NOT NULL REFERENCES users(id),
    title           text NOT NULL,
    description     text,
    storage_path    text NOT NULL,
    mux_asset_id    text,
    mux_playback_id text,
    duration_s      numeric(10,3),
    status          text NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz
);
CREATE TABLE generated_videos (
    id          bigint PRIMARY KEY,
    video_id    bigint NOT NULL REFERENCES videos(id),
    prompt      text NOT NULL,
    params      jsonb NOT NULL,
    seed_digest bytea NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE TABLE analytics.events (
    id          bigint PRIMARY KEY,
    user_id     bigint,
    video_id    bigint,
    event_type  text NOT NULL,
    session_id  uuid NOT NULL,
    occurred_at timestamptz NOT NULL,
    ip          inet,
    user_agent  text,
    payload     jsonb
);
CREATE SEQUENCE analytics.export_batch_seq;
CREATE VIEW analytics.daily_views AS
    SELECT date_trunc('day', occurred_at) AS day, count(*) AS views
    FROM analytics.events WHERE event_type = 'view' GROUP BY 1;
"""

LOAD = {
    "users": """
INSERT INTO users (id, email, display_name, bio, settings, plan, created_at, last_login_at)
SELECT g,
       'user' || g || '@' || (ARRAY['example.com','mail.test','inbox.example','corp.example'])[1 + g %% 4],
       initcap((ARRAY['alex','sam','kim','lee','noa','ari','max','eva','tom','zoe'])[1 + (random()*9)::int]) || ' '
         || initcap(substr(md5(g::text), 1, 6)),
       CASE WHEN random() < 0.7
            THEN substr(%(lorem)s::text, 1 + (random()*4000)::int, 40 + (random()*260)::int)
                 || ' ' || md5(random()::text)
       END,
       jsonb_build_object('theme', (ARRAY['light','dark','system'])[1 + g %% 3],
                          'notifications', random() < 0.5, 'locale', (ARRAY['en','fr','de','es','pt'])[1 + g %% 5],
                          'onboarding', jsonb_build_object('done', random() < 0.8, 'step', (random()*5)::int),
                          'api_token_hint', substr(md5(random()::text), 1, 8)),
       (ARRAY['free','free','free','pro','team'])[1 + g %% 5],
       now() - random() * interval '3 years',
       CASE WHEN random() < 0.9 THEN now() - random() * interval '30 days' END
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g
""",
    "videos": """
INSERT INTO videos (id, user_id, title, description, storage_path, mux_asset_id, mux_playback_id,
                    duration_s, status, metadata, created_at, updated_at)
SELECT g, u,
       initcap(substr(%(lorem)s::text, 1 + (random()*4000)::int, 20 + (random()*50)::int)),
       CASE WHEN random() < 0.85 THEN substr(%(lorem)s::text, 1 + (random()*3000)::int, 100 + (random()*900)::int) END,
       'videos/' || u || '/' || md5(g::text) || '.mp4',
       md5(random()::text) || substr(md5(random()::text), 1, 12),
       substr(md5(random()::text), 1, 24),
       round((random() * 3600)::numeric, 3),
       (ARRAY['ready','ready','ready','processing','errored','deleted'])[1 + (random()*5)::int],
       jsonb_build_object('resolution', (ARRAY['720p','1080p','1440p','2160p'])[1 + g %% 4],
                          'codec', (ARRAY['h264','hevc','av1'])[1 + g %% 3],
                          'bitrate_kbps', 800 + (random()*12000)::int,
                          'fps', (ARRAY[24,25,30,60])[1 + g %% 4],
                          'tags', jsonb_build_array((ARRAY['travel','music','cooking','gaming','science'])[1 + g %% 5],
                                                    (ARRAY['tutorial','review','vlog','short'])[1 + g %% 4]),
                          'checksum', md5(random()::text)),
       now() - random() * interval '2 years',
       CASE WHEN random() < 0.3 THEN now() - random() * interval '60 days' END
FROM (SELECT g, 1 + (random() * (%(users)s::bigint - 1))::bigint AS u
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g) s
""",
    "generated_videos": """
INSERT INTO generated_videos (id, video_id, prompt, params, seed_digest, created_at)
SELECT g, 1 + (random() * (%(videos)s::bigint - 1))::bigint,
       substr(%(lorem)s::text, 1 + (random()*4000)::int, 60 + (random()*240)::int),
       jsonb_build_object('model', (ARRAY['gen-2','gen-3','gen-3-turbo'])[1 + g %% 3],
                          'seed', (random() * 2147483647)::bigint, 'steps', 20 + g %% 40,
                          'guidance', round((random() * 10)::numeric, 2)),
       digest(g::text || random()::text, 'sha256'),
       now() - random() * interval '1 year'
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g
""",
    "analytics.events": """
INSERT INTO analytics.events (id, user_id, video_id, event_type, session_id, occurred_at, ip, user_agent, payload)
SELECT g, 1 + (random() * (%(users)s::bigint - 1))::bigint, 1 + (random() * (%(videos)s::bigint - 1))::bigint,
       (ARRAY['view','view','view','play','pause','seek','complete','like','share','comment'])[1 + (random()*9)::int],
       gen_random_uuid(),
       now() - random() * interval '180 days',
       ('10.' || (random()*255)::int || '.' || (random()*255)::int || '.' || (random()*255)::int)::inet,
       (ARRAY['Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) '
              'Chrome/120.0 Safari/537.36',
              'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) '
              'Version/17.1 Safari/605.1.15',
              'Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148',
              'Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0'])[1 + (random()*3)::int],
       jsonb_build_object('position_s', round((random() * 3600)::numeric, 1),
                          'referrer', (ARRAY['https://www.google.com/','https://t.co/','direct',
                                             'https://news.example/' || substr(md5(random()::text), 1, 10)]
                                      )[1 + (random()*3)::int],
                          'device', (ARRAY['desktop','mobile','tablet','tv'])[1 + (random()*3)::int],
                          'request_id', md5(random()::text))
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g
""",
}

INDEXES = [
    "CREATE UNIQUE INDEX users_email_key ON users (email)",
    "CREATE UNIQUE INDEX users_uuid_key ON users (uuid)",
    "CREATE INDEX users_created_at_idx ON users (created_at)",
    "CREATE UNIQUE INDEX videos_storage_path_key ON videos (storage_path)",
    "CREATE INDEX videos_user_id_idx ON videos (user_id)",
    "CREATE INDEX videos_created_at_idx ON videos (created_at)",
    "CREATE INDEX videos_metadata_gin ON videos USING gin (metadata jsonb_path_ops)",
    "CREATE INDEX generated_videos_video_id_idx ON generated_videos (video_id)",
    "CREATE INDEX events_user_time_idx ON analytics.events (user_id, occurred_at)",
    "CREATE INDEX events_video_idx ON analytics.events (video_id)",
    "CREATE INDEX events_occurred_brin ON analytics.events USING brin (occurred_at)",
]

CHUNK = 500_000


def counts(scale: float) -> dict[str, int]:
    return {name: max(10, int(round(n * scale))) for name, n in
            (("users", USERS), ("videos", VIDEOS), ("generated_videos", GENERATED), ("analytics.events", EVENTS))}


def existing_scale(db: str) -> tuple[float, int] | None:
    if benchlib.database_size(db) is None:
        return None
    try:
        with benchlib.admin_target(db).connect() as conn:
            row = conn.execute("SELECT scale, generator_version FROM bench_meta ORDER BY generated_at DESC LIMIT 1"
                               ).fetchone()
    except Exception:  # noqa: BLE001 - no meta table: an incomplete database, rebuild it
        return None
    return (float(row[0]), int(row[1])) if row else None


def generate(db: str, scale: float, force: bool = False, quiet: bool = False) -> dict:
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    have = existing_scale(db)
    if have and not force and abs(have[0] - scale) < 1e-9 and have[1] == GENERATOR_VERSION:
        size = benchlib.database_size(db) or 0
        say(f"{db}: already generated at scale {scale} ({size / benchlib.MIB:.0f} MiB); --force to rebuild")
        return {"database": db, "scale": scale, "size_bytes": size, "generated": False, "rows": counts(scale)}
    t0 = time.perf_counter()
    benchlib.create_database(db)
    n = counts(scale)
    with benchlib.admin_target(db).connect() as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute(DDL)
        conn.execute("SELECT setseed(0.42)")
        params = {"users": n["users"], "videos": n["videos"], "lorem": _lorem()}
        for table, sql in LOAD.items():
            t1 = time.perf_counter()
            for lo in range(1, n[table] + 1, CHUNK):
                hi = min(n[table], lo + CHUNK - 1)
                conn.execute(sql, {**params, "lo": lo, "hi": hi})
            say(f"  {table:<18} {n[table]:>10,} rows  {time.perf_counter() - t1:6.1f} s")
        t1 = time.perf_counter()
        for stmt in INDEXES:
            conn.execute(stmt)
        conn.execute("ALTER TABLE analytics.events ADD CONSTRAINT events_user_fk FOREIGN KEY (user_id) "
                     "REFERENCES users(id) NOT VALID")
        say(f"  indexes            {len(INDEXES):>10} idx   {time.perf_counter() - t1:6.1f} s")
        conn.execute("VACUUM (ANALYZE)")
        seconds = time.perf_counter() - t0
        conn.execute("INSERT INTO bench_meta (scale, generator_version, seconds) VALUES (%s, %s, %s)",
                     (scale, GENERATOR_VERSION, round(seconds, 1)))
    size = benchlib.database_size(db) or 0
    say(f"{db}: generated at scale {scale} in {seconds:.1f} s, pg_database_size = {size / benchlib.MIB:.0f} MiB "
        f"({size / 1e9:.2f} GB)")
    return {"database": db, "scale": scale, "size_bytes": size, "generated": True, "seconds": round(seconds, 1),
            "rows": n}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="size target in GB (default 1.0; 0.05 for a quick run)")
    ap.add_argument("--database", help="database name (default: lifeboat_bench for scale 1.0, "
                                       "lifeboat_bench_0_05 for 0.05, ...; LIFEBOAT_BENCH_DB overrides)")
    ap.add_argument("--force", action="store_true", help="rebuild even if present at this scale")
    ap.add_argument("--drop", action="store_true", help="drop the benchmark database and exit")
    args = ap.parse_args(argv)
    args.database = args.database or benchlib.bench_db_for(args.scale)
    if args.database in ("appdb", "postgres", "template0", "template1"):
        sys.exit(f"refusing to use '{args.database}' as the benchmark database")
    if args.drop:
        benchlib.drop_database(args.database)
        print(f"{args.database}: dropped")
        return 0
    if args.scale <= 0:
        sys.exit("--scale must be > 0")
    generate(args.database, args.scale, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
