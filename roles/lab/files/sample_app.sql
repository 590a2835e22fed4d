-- Lifeboat lab: the sample application database (loaded once into appdb).
-- Shaped like a small video web app: users, uploaded videos in object storage
-- (storage_path = object key in the app-storage bucket), AI-generated videos,
-- analytics events, invoices. Deterministic data, so counts are stable.
-- Objects are owned by app_owner; lifeboat_backup can read everything.
\set ON_ERROR_STOP on
SET ROLE app_owner;

CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;
CREATE SCHEMA analytics AUTHORIZATION app_owner;

-- A standalone sequence used by a column default (not OWNED BY a column).
CREATE SEQUENCE public.invoice_number_seq START WITH 100001;

CREATE TABLE public.users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email text NOT NULL UNIQUE,
    display_name text,
    profile jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.videos (
    id bigserial PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
    title text NOT NULL,
    storage_path text NOT NULL UNIQUE,
    mux_asset_id text,
    mux_playback_id text,
    status text NOT NULL DEFAULT 'ready'
        CHECK (status IN ('uploading', 'processing', 'ready', 'failed')),
    duration_s numeric(8, 2),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX videos_user_id_idx ON public.videos (user_id);
CREATE INDEX videos_status_created_at_idx ON public.videos (status, created_at DESC);

CREATE TABLE public.generated_videos (
    id bigserial PRIMARY KEY,
    video_id bigint NOT NULL REFERENCES public.videos (id) ON DELETE CASCADE,
    prompt text NOT NULL,
    output_path text UNIQUE,
    params jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX generated_videos_video_id_idx ON public.generated_videos (video_id);

CREATE TABLE public.invoices (
    id bigserial PRIMARY KEY,
    invoice_number bigint NOT NULL UNIQUE DEFAULT nextval('public.invoice_number_seq'),
    user_id uuid NOT NULL REFERENCES public.users (id),
    amount_cents integer NOT NULL CHECK (amount_cents >= 0),
    currency char(3) NOT NULL DEFAULT 'EUR',
    issued_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE analytics.events (
    id bigserial PRIMARY KEY,
    user_id uuid REFERENCES public.users (id) ON DELETE SET NULL,
    event_type text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_user_id_event_type_idx ON analytics.events (user_id, event_type);
CREATE INDEX events_payload_gin_idx ON analytics.events USING gin (payload);

-- Quoted, mixed-case names with spaces: every tool must quote identifiers.
CREATE TABLE public."Audit Log" (
    id bigserial PRIMARY KEY,
    "Actor Email" text,
    action text NOT NULL,
    "Details" jsonb,
    logged_at timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW public.video_summary AS
SELECT u.id AS user_id,
       u.email,
       (SELECT count(*) FROM public.videos v WHERE v.user_id = u.id) AS video_count,
       (SELECT count(*) FROM public.generated_videos g
          JOIN public.videos v ON v.id = g.video_id
         WHERE v.user_id = u.id) AS generated_count,
       (SELECT max(v.created_at) FROM public.videos v WHERE v.user_id = u.id) AS last_upload_at
  FROM public.users u;

-- Data: 400 users, 1200 videos, 400 generated videos, 800 invoices,
-- 3000 events, 200 audit rows.
INSERT INTO public.users (id, email, display_name, profile, created_at)
SELECT md5('lifeboat-user-' || i)::uuid,
       format('user%s@example.com', i),
       format('User %s', i),
       jsonb_build_object('plan', (ARRAY['free', 'pro', 'team'])[1 + i % 3],
                          'locale', (ARRAY['en', 'fr', 'de', 'ja'])[1 + i % 4],
                          'marketing_opt_in', i % 2 = 0),
       timestamptz '2025-01-01 00:00:00+00' + i * interval '1 hour'
  FROM generate_series(1, 400) AS i;

INSERT INTO public.videos (user_id, title, storage_path, mux_asset_id, mux_playback_id,
                           status, duration_s, created_at)
SELECT u.id,
       format('Video %s of %s', n, u.display_name),
       format('videos/%s/%s.mp4', u.id, n),
       'mux-asset-' || substr(md5(u.id::text || n), 1, 20),
       'mux-play-' || substr(md5(n || u.id::text), 1, 20),
       CASE WHEN n = 3 AND u.email LIKE 'user1%' THEN 'processing' ELSE 'ready' END,
       round((10 + (n * 37 % 600))::numeric, 2),
       u.created_at + n * interval '1 day'
  FROM public.users u
 CROSS JOIN generate_series(1, 3) AS n
 ORDER BY u.created_at, n;

INSERT INTO public.generated_videos (video_id, prompt, output_path, params, created_at)
SELECT v.id,
       format('A short clip number %s, "quoted", with O''Brien''s café ☕', v.id),
       format('generated/%s/%s.mp4', v.user_id, v.id),
       jsonb_build_object('model', 'gen-2', 'seed', v.id, 'steps', 20 + v.id % 30),
       v.created_at + interval '10 minutes'
  FROM public.videos v
 WHERE v.id % 3 = 0;

INSERT INTO public.invoices (user_id, amount_cents, currency, issued_at)
SELECT u.id, 500 + (i * 731) % 10000, (ARRAY['EUR', 'USD'])[1 + i % 2],
       u.created_at + i * interval '1 day'
  FROM generate_series(1, 800) AS i
  JOIN public.users u ON u.id = md5('lifeboat-user-' || (1 + i % 400))::uuid
 ORDER BY i;

INSERT INTO analytics.events (user_id, event_type, payload, occurred_at)
SELECT md5('lifeboat-user-' || (1 + i % 400))::uuid,
       (ARRAY['login', 'upload', 'play', 'share', 'purchase'])[1 + i % 5],
       jsonb_build_object('i', i, 'client', (ARRAY['web', 'ios', 'android'])[1 + i % 3]),
       timestamptz '2025-02-01 00:00:00+00' + i * interval '1 minute'
  FROM generate_series(1, 3000) AS i;

INSERT INTO public."Audit Log" ("Actor Email", action, "Details", logged_at)
SELECT format('user%s@example.com', 1 + i % 400),
       (ARRAY['login', 'delete video', 'change plan'])[1 + i % 3],
       jsonb_build_object('ip', '127.0.0.1', 'n', i),
       timestamptz '2025-03-01 00:00:00+00' + i * interval '1 hour'
  FROM generate_series(1, 200) AS i;

-- The backup role reads everything (pg_read_all_data is granted too).
GRANT CONNECT ON DATABASE appdb TO lifeboat_backup;
GRANT USAGE ON SCHEMA public, analytics TO lifeboat_backup;
GRANT SELECT ON ALL TABLES IN SCHEMA public, analytics TO lifeboat_backup;
GRANT SELECT ON ALL SEQUENCES IN SCHEMA public, analytics TO lifeboat_backup;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public, analytics
    GRANT SELECT ON TABLES TO lifeboat_backup;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public, analytics
    GRANT SELECT ON SEQUENCES TO lifeboat_backup;

RESET ROLE;
ANALYZE;
