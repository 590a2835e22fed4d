-- Lifeboat lab: a tiny database on the PostgreSQL 18 server (newer-major tests).
\set ON_ERROR_STOP on
CREATE TABLE public.accounts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE public.notes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES public.accounts (id),
    body text NOT NULL
);
INSERT INTO public.accounts (email)
SELECT format('pg18-user%s@example.com', i) FROM generate_series(1, 50) AS i;
INSERT INTO public.notes (account_id, body)
SELECT 1 + i % 50, format('note %s', i) FROM generate_series(1, 200) AS i;
