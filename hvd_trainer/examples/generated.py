"""Tables the set, text, vector, date and access examples train on: generated with a fixed seed (text,
sets and dates that follow a rule a model can learn) or taken from scikit-learn (iris).

    movie_reviews  Ludwig's rotten_tomatoes columns: genres (set), content_rating (category),
                   top_critic (binary), runtime (number), review_content (text) -> recommended
                   (binary: the review's words are positive, or, for a review with as many
                   positive as negative words, the movie is a documentary)
    movie_genres   plot (text) -> genres (set: each genre has its own plot words)
    iris_vector    the 4 iris measurements as one vector column -> species (category)
    daily_rentals  day (date) -> rentals (number: weekday and season effects)
    access         Ludwig's lbfgs example's columns (Amazon employee access): nine categorical ids ->
                   ACTION (an additive score of three ids above its median, 5% flipped), a fixed
                   `split` column and a `request_date` per row, for the split examples
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Documentary", "Animation")
RATINGS = ("G", "PG", "PG-13", "R", "NR")
POSITIVE = ("brilliant", "moving", "superb", "delightful", "gripping", "masterful", "charming", "stunning")
NEGATIVE = ("dull", "clumsy", "tedious", "bland", "messy", "forgettable", "lifeless", "boring")
NEUTRAL = ("the", "film", "plot", "actor", "scene", "director", "story", "script", "camera", "score", "cast",
           "ending", "it", "is", "a", "with", "and")
GENRE_WORDS = {
    "Action": ("explosion", "chase", "heist"), "Comedy": ("joke", "prank", "laughs"),
    "Drama": ("family", "grief", "trial"), "Horror": ("ghost", "cellar", "scream"),
    "Romance": ("wedding", "kiss", "letters"), "Documentary": ("archive", "interview", "history"),
    "Animation": ("cartoon", "talking", "dragon"),
}


def movie_reviews(n: int = 4000, seed: int = 0) -> Tuple[List[str], Dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    genres, reviews, recommended = [], [], []
    for _ in range(n):
        picked = sorted(rng.choice(len(GENRES), size=rng.integers(1, 4), replace=False))
        names = [GENRES[i] for i in picked]
        pos = int(rng.integers(0, 5))
        neg = int(rng.integers(0, 5))
        words = list(rng.choice(POSITIVE, pos)) + list(rng.choice(NEGATIVE, neg)) + list(rng.choice(NEUTRAL, 6))
        rng.shuffle(words)
        text = " ".join(words).capitalize() + rng.choice([".", "!", "..."])
        genres.append(", ".join(names))
        reviews.append(text)
        recommended.append(pos > neg or (pos == neg and "Documentary" in names))
    columns = {
        "genres": np.array(genres, dtype=object),
        "content_rating": rng.choice(RATINGS, n).astype(object),
        "top_critic": np.where(rng.random(n) < 0.3, "True", "False").astype(object),
        "runtime": rng.normal(110, 20, n).round(0),
        "review_content": np.array(reviews, dtype=object),
        "recommended": np.where(recommended, "True", "False").astype(object),
    }
    return list(columns), columns


def movie_genres(n: int = 3000, seed: int = 1) -> Tuple[List[str], Dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    plots, genres = [], []
    for _ in range(n):
        picked = sorted(rng.choice(len(GENRES), size=rng.integers(1, 3), replace=False))
        names = [GENRES[i] for i in picked]
        words = [w for g in names for w in rng.choice(GENRE_WORDS[g], 2)] + list(rng.choice(NEUTRAL, 5))
        rng.shuffle(words)
        plots.append(" ".join(words))
        genres.append(" ".join(names))
    columns = {"plot": np.array(plots, dtype=object), "genres": np.array(genres, dtype=object)}
    return list(columns), columns


def iris_vector() -> Tuple[List[str], Dict[str, np.ndarray]]:
    from sklearn import datasets

    data = datasets.load_iris()
    measurements = np.array([" ".join(f"{x:g}" for x in row) for row in data.data], dtype=object)
    species = np.array([data.target_names[t] for t in data.target], dtype=object)
    return ["measurements", "species"], {"measurements": measurements, "species": species}


def daily_rentals(seed: int = 2) -> Tuple[List[str], Dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    days = np.arange(np.datetime64("2015-01-01"), np.datetime64("2020-12-31"))
    weekday = (days.astype("datetime64[D]").astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    month = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    rentals = 100 + 60 * (weekday >= 5) + 40 * np.isin(month, (6, 7, 8)) + rng.normal(0, 5, len(days))
    return ["day", "rentals"], {"day": days.astype(str).astype(object), "rentals": rentals.round(1)}




ACCESS_COLUMNS = ("RESOURCE", "MGR_ID", "ROLE_ROLLUP_1", "ROLE_ROLLUP_2", "ROLE_DEPTNAME", "ROLE_TITLE",
                  "ROLE_FAMILY_DESC", "ROLE_FAMILY", "ROLE_CODE")


def access_columns(n: int = 4000, seed: int = 0) -> Tuple[List[str], Dict[str, np.ndarray]]:
    """(column order, columns) of the generated access table."""
    rng = np.random.default_rng(seed)
    columns: Dict[str, np.ndarray] = {}
    score = np.zeros(n)
    for i, name in enumerate(ACCESS_COLUMNS):
        ids = rng.integers(0, 10 + 4 * i, n)
        if name in ("RESOURCE", "MGR_ID", "ROLE_TITLE"):
            score += rng.normal(0, 1, int(ids.max()) + 1)[ids]
        columns[name] = np.array([f"{name.lower()}_{v}" for v in ids], dtype=object)
    action = (score > np.median(score)).astype(np.int64)
    flip = rng.random(n) < 0.05
    columns["ACTION"] = np.where(flip, 1 - action, action)
    columns["split"] = rng.choice([0, 1, 2], n, p=[0.7, 0.1, 0.2])
    days = rng.integers(0, 3 * 365, n)
    columns["request_date"] = np.array([str(np.datetime64("2021-01-01") + int(d)) for d in days], dtype=object)
    order = list(ACCESS_COLUMNS) + ["ACTION", "split", "request_date"]
    return order, columns


GENERATED = {"movie_reviews": movie_reviews, "movie_genres": movie_genres, "iris_vector": iris_vector,
             "daily_rentals": daily_rentals, "access": access_columns}
