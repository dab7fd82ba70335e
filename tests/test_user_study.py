"""The user study (`python -m t4a_jax.evaluate.user_study`): the page in a real browser
(blinded, shuffled per rater, export only when complete), ratings exported and
un-blinded into Table 3 whose means are the ratings given, and bad files named."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from browser import browser, open_page  # noqa: F401 (the fixture)
from t4a_jax.evaluate import user_study
from t4a_jax.video import write_video

METHODS = ("ours", "animate3d", "dg4d")
OBJECTS = ("bird", "cat", "dog", "fox")
# What each method gets from every rater, per criterion (so the tally is known).
GIVEN = {"ours": (5, 4, 5, 3), "animate3d": (3, 3, 2, 4), "dg4d": (1, 2, 2, 1)}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(0)
    for m, method in enumerate(METHODS):
        for name in OBJECTS + (("extra",) if method == "ours" else ()):
            frames = rng.integers(0, 255, (4, 24, 24, 3), np.uint8)
            path = (root / method / f"{name}.gif" if m != 1 else
                    root / method / name / "turntable.gif")        # a Stage Two folder
            path.parent.mkdir(parents=True, exist_ok=True)
            write_video(str(path), frames, fps=8)
    (root / "refs").mkdir()
    write_video(str(root / "refs" / "cat.gif"), rng.integers(0, 255, (2, 24, 24, 3),
                                                             np.uint8), fps=8)
    (root / "prompts.json").write_text(json.dumps({o: f"a {o} jumps" for o in OBJECTS}))
    spec = ",".join(f"{m}={root / m}" for m in METHODS)
    html, key = user_study.make_study(spec, str(root / "out"), references=str(root / "refs"),
                                      prompts_file=str(root / "prompts.json"), size=48,
                                      seed=0)
    return root, html, key


def _rate(page, key: dict, skip_last: bool = False) -> None:
    """Click every rating: the score GIVEN to the animation's method (read off the key)."""
    clips = [c for entry in page.evaluate("t4aStudy.order") for c in entry["clips"]]
    for i, clip in enumerate(clips):
        scores = GIVEN[key["clips"][clip]["method"]]
        for j, (criterion, _) in enumerate(user_study.CRITERIA):
            if skip_last and i == len(clips) - 1 and j == len(scores) - 1:
                continue
            page.check(f'input[name="{clip}-{criterion}"][value="{scores[j]}"]')


def _begin(browser, html, rater):
    page, errors, requests = open_page(browser, html, accept_downloads=True)
    page.fill("#rater", rater)
    page.click("#begin")
    return page, errors, requests


def test_page_blinds_shuffles_per_rater_and_exports_complete_ratings(browser, study):
    root, html, key_path = study
    key = json.load(open(key_path))
    page_text = open(html, encoding="utf-8").read()
    for method in METHODS:                               # blinded: no method name inside
        assert method not in page_text
    assert key["objects"] == sorted(OBJECTS)             # "extra" is not in every method
    files, orders = [], {}
    for rater in ("alice", "bob"):
        page, errors, requests = _begin(browser, html, rater)
        orders[rater] = page.evaluate("t4aStudy.order")
        assert sorted(o["object"] for o in orders[rater]) == sorted(OBJECTS)
        for entry in orders[rater]:
            assert sorted(key["clips"][c]["method"] for c in entry["clips"]) == sorted(METHODS)
            assert {key["clips"][c]["object"] for c in entry["clips"]} == {entry["object"]}
        assert page.locator(".reference img").count() == 1          # cat's reference
        assert "a dog jumps" in page.inner_text("#objects")
        _rate(page, key, skip_last=True)
        assert page.is_disabled("#export")
        _rate(page, key)
        assert "48 of 48 ratings given" in page.inner_text("#progress")
        with page.expect_download() as download:
            page.click("#export")
        path = root / f"ratings_{rater}.json"
        download.value.save_as(path)
        files.append(str(path))
        assert errors == [], errors
        assert all(u.startswith(("file://", "data:", "blob:")) for u in requests), requests
        page.close()
    assert orders["alice"] != orders["bob"]
    page, _, _ = _begin(browser, html, "alice")                      # the same rater again
    assert page.evaluate("t4aStudy.order") == orders["alice"]
    page.close()

    assert user_study.main(["collect", key_path, *files]) == 0
    table = json.load(open(root / "out" / "table3.json"))["methods"]
    for method, scores in GIVEN.items():
        for (criterion, _), value in zip(user_study.CRITERIA, scores):
            assert table[method][criterion] == value
        assert table[method]["ratings"] == 2 * len(OBJECTS) and table[method]["raters"] == 2
    text = open(root / "out" / "table3.md").read()
    assert "| ours | 5.0000 | 4.0000 | 5.0000 | 3.0000 |" in text
    assert "Ours (paper) | 3.5700" in text


def _ratings(key: dict, rater: str, **change) -> dict:
    rows = [{"object": c["object"], "clip": clip,
             **dict(zip((k for k, _ in user_study.CRITERIA), GIVEN[c["method"]]))}
            for clip, c in key["clips"].items()]
    rows[0].update(change)
    return {"format": user_study.RATINGS_FORMAT, "study": key["study"], "rater": rater,
            "ratings": rows}


def test_collect_names_each_bad_file(study, tmp_path, capsys):
    _, _, key_path = study
    key = json.load(open(key_path))

    def run(*answers):
        paths = []
        for i, answer in enumerate(answers):
            paths.append(str(tmp_path / f"r{i}.json"))
            json.dump(answer, open(paths[-1], "w"))
        code = user_study.main(["collect", key_path, *paths, "--out", str(tmp_path)])
        return code, capsys.readouterr().err

    assert run(_ratings(key, "a"))[0] == 0
    assert "motion=7" in run(_ratings(key, "a", motion=7))[1]
    other = {**_ratings(key, "a"), "study": "0000"}
    assert "not a ratings file of study" in run(other)[1]
    incomplete = _ratings(key, "a")
    incomplete["ratings"] = incomplete["ratings"][1:]
    assert "did not rate every animation" in run(incomplete)[1]
    assert "answered twice" in run(_ratings(key, "a"), _ratings(key, "a"))[1]
    assert user_study.main(["collect", str(tmp_path / "r0.json")]) == 1
    assert "exactly one key.json" in capsys.readouterr().err


def test_make_names_methods_without_shared_objects(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_video(str(tmp_path / "a" / "cat.gif"), np.zeros((2, 8, 8, 3), np.uint8), fps=8)
    with pytest.raises(ValueError, match="no object has an animation in every method"):
        user_study.make_study(f"a={tmp_path / 'a'},b={tmp_path / 'b'}", str(tmp_path / "o"))
    with pytest.raises(ValueError, match="two or more methods"):
        user_study.make_study(f"a={tmp_path / 'a'}", str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()
