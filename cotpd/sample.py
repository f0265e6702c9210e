"""`cotpd sample [--out DIR] [--seed N]`: write the embedded sample datasets (deterministic).

Every tweet is invented here from templates and made-up names (no real tweet text). The files use
EXACTLY the published formats, so the sample exercises the same readers as the real data:
  mner/{train,valid,test}.txt        Twitter CoNLL (IMGID lines), 36/12/12 tweets, PER LOC ORG OTHER
  mner/captions.txt                  `<id>.jpg :caption`  (BLIP2_15.txt format)
  mner/images/<id>.jpg               64x64 JPEGs, shared by the tweets of one theme
  mnre/mnre_{train,val,test}.txt     MNRE dict literals, 36/12/12 instances, 13 relations incl. None
  mnre/rel2id.json                   all 23 MNRE labels
  mnre/captions/blip_{train,val,test}.txt   CAMIM dict-literal captions (+ an `inf.png` row, one empty)
  mnre/images/<img_id>
Two MNER tweets point at image 79999.jpg, which has neither a file nor a caption: the "missing
image" paths of later stages run on the sample too.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

from .args import common, setup_logging
from .io import atomic_write

SAMPLE_DIR = Path(__file__).parent / "sample"
SIZES = {"train": 36, "valid": 12, "test": 12}
MNRE_FILES = {"train": "train", "valid": "val", "test": "test"}

# the MNRE-2 label set (thecharm/MNRE rel2id.json), None = 0
RELATIONS = ["None", "/per/per/parent", "/per/per/siblings", "/per/per/couple", "/per/per/neighbor",
             "/per/per/peer", "/per/per/charges", "/per/per/alumi", "/per/per/alternate_names",
             "/per/org/member_of", "/per/loc/place_of_residence", "/per/loc/place_of_birth",
             "/org/org/alternate_names", "/org/org/subsidiary", "/org/loc/locate_at", "/loc/loc/contain",
             "/per/misc/present_in", "/per/misc/awarded", "/per/misc/race", "/per/misc/religion",
             "/per/misc/nationality", "/misc/misc/part_of", "/misc/loc/held_on"]

NAMES = {  # invented people and organisations; real cities (places are not tweets)
    "PER": ["Mara Lindqvist", "Tomas Okafor", "Priya Venkat", "Jonah Beckett", "Elena Moretti", "Kwame Asante",
            "Sofia Herrera", "Liam Doyle", "Aiko Tanaka", "Noor Haddad", "Felix Brandt", "Rosa Delgado",
            "Ivan Petrov", "Hana Kowalski", "Omar Farouk", "Greta Olsen", "Dev Malhotra", "Lucia Ferro"],
    "LOC": ["Paris", "Lisbon", "Nairobi", "Toronto", "Kyoto", "Oslo", "Lima", "Cairo", "Denver", "Glasgow",
            "Seoul", "Austin", "New York", "Cape Town", "Buenos Aires", "Melbourne"],
    "TEAM": ["Bluefin FC", "Summit United", "Redwood Rovers", "Harbor City FC", "Kestrel Athletic"],
    "COMPANY": ["Northwind Labs", "Harbor Bank", "Lumen Records", "Redwood University", "Orbit Air",
                "Civic Radio", "Greenleaf Foods", "Atlas Motors", "Kestrel Games"],
    "MARKET": ["Old Town Market", "Riverside Bazaar", "Copper Lane Market"],
    "NATION": ["Kenyan", "Peruvian", "Norwegian", "Japanese", "Canadian"],
    "OTHER": ["Winter Cup", "Lantern Festival", "Jazz Week", "Nova X2", "Skyline Marathon", "Golden Reel Awards",
              "Spring Open", "Echo Prize", "Harvest Fair", "Pixelcon"],
}
LABEL = {"PER": "PER", "LOC": "LOC", "MARKET": "LOC", "TEAM": "ORG", "COMPANY": "ORG", "NATION": "OTHER",
         "OTHER": "OTHER"}  # pool -> entity type
HANDLES = ["nightowl_88", "daily_dose", "sam_writes", "the_real_kat", "urbanlens", "coffee_and_code", "ruthless_ref"]
TAGS = ["travel", "music", "football", "news", "weekend", "photo", "tbt", "win"]

# theme -> (caption, background, shape colour, shape). Images are drawn, not photographed.
THEMES = {
    "beach": ("a sunny beach with blue sky and a yellow sun", (110, 180, 235), (250, 215, 60), "sun"),
    "stadium": ("a green football field with white lines", (40, 140, 60), (245, 245, 245), "lines"),
    "stage": ("a dark concert stage lit by a yellow spotlight", (45, 20, 70), (255, 230, 110), "cone"),
    "city": ("tall grey buildings of a city skyline", (190, 215, 240), (110, 110, 120), "towers"),
    "snow": ("a snowy street under a grey sky", (170, 170, 180), (250, 250, 250), "ground"),
    "office": ("a blue sign on the front of an office building", (20, 40, 110), (235, 235, 240), "box"),
    "sunset": ("an orange sunset over dark water", (245, 140, 50), (30, 40, 80), "ground"),
    "trophy": ("a gold trophy on a red table", (170, 30, 40), (230, 185, 50), "cone"),
}
MNER_IMAGE = {t: str(70001 + i) for i, t in enumerate(THEMES)}
MISSING_IMAGE = "79999"  # referenced by two tweets, no file, no caption

# (template, theme). {PER} {LOC} {TEAM} {COMPANY} {OTHER}: entities; {user} {url} {tag}: tweet noise, labelled O
MNER_TEMPLATES = [
    ("RT @{user} : {PER} visits {LOC} for the {OTHER} #{tag} {url}", "beach"),
    ("{PER} joins {COMPANY} after three years in {LOC}", "office"),
    ("Great night at the {OTHER} in {LOC} with {PER} !", "stage"),
    ("{COMPANY} announces a new office in {LOC} {url}", "office"),
    ("@{user} did you see {PER} on stage last night ? #{tag}", "stage"),
    ("Snow again in {LOC} today . Stay warm everyone", "snow"),
    ("{PER} and {PER} win the {OTHER} for {TEAM}", "trophy"),
    ("Breaking : {TEAM} fans celebrate in {LOC} #{tag}", "stadium"),
    ("Can not wait for the {OTHER} this weekend in {LOC} !", "city"),
    ("Photo of the day : sunset over {LOC} {url}", "sunset"),
    ("{PER} signs with {TEAM} #{tag}", "stadium"),
    ("Lunch with {PER} in downtown {LOC} , then back to {COMPANY}", "city"),
]

# (template with {h} {t} and other slots, relation, head type, tail type, theme)
MNRE_TEMPLATES = [
    ("{h} was born in {t} and still calls it home", "/per/loc/place_of_birth", "PER", "LOC", "city"),
    ("{h} moved to {t} last year #{tag}", "/per/loc/place_of_residence", "PER", "LOC", "city"),
    ("{h} scores twice for {t} tonight !", "/per/org/member_of", "PER", "TEAM", "stadium"),
    ("{h} opens a new store in {t} {url}", "/org/loc/locate_at", "COMPANY", "LOC", "office"),
    ("{h} and her husband {t} at the premiere", "/per/per/couple", "PER", "PER", "stage"),
    ("{h} receives the {t} in front of a full hall", "/per/misc/awarded", "PER", "OTHER", "trophy"),
    ("{h} spotted at the {t} this afternoon", "/per/misc/present_in", "PER", "OTHER", "stage"),
    ("The {h} will be held in {t} this summer", "/misc/loc/held_on", "OTHER", "LOC", "beach"),
    ("RT @{user} : {h} and teammate {t} after the final whistle", "/per/per/peer", "PER", "PER", "stadium"),
    ("{h} , part of {t} , reports record sales", "/org/org/subsidiary", "COMPANY", "COMPANY", "office"),
    ("Sunset walk with {h} before the trip to {t}", "None", "PER", "LOC", "sunset"),
    ("{h} retweeted a clip from {t} about the snow", "None", "PER", "COMPANY", "snow"),
    ("Stuck in traffic near {t} , says {h} #{tag}", "None", "PER", "LOC", "city"),
    ("Walking through {t} , the oldest market in {h}", "/loc/loc/contain", "LOC", "MARKET", "city"),
    ("{h} , the {t} runner , breaks the course record", "/per/misc/nationality", "PER", "NATION", "stadium"),
]
MNRE_BLANK_IMAGE = "sample_blank.jpg"  # listed in blip_val.txt with an empty caption (as 35 real ones are)


def _filler(rng: random.Random, slot: str) -> str:
    if slot == "user":
        return rng.choice(HANDLES)  # the template writes the @
    if slot == "url":
        return "http://t.co/" + "".join(rng.choice("abcdefghjkmnpqrstuvwxyzABCDEFGH23456789") for _ in range(10))
    return rng.choice(TAGS)


def fill(rng: random.Random, template: str, marks: dict[str, str] | None = None):
    """Tokens, IOB2 labels and {mark: (start, end)} spans of one filled template."""
    tokens, labels, spans, used = [], [], {}, set()
    for piece in template.split():
        pre, brace, rest = piece.partition("{")
        slot, close, post = rest.partition("}")
        if not brace or not close:
            tokens.append(piece)
            labels.append("O")
            continue
        typ = (marks or {}).get(slot, slot)
        if typ in NAMES:
            name = rng.choice([n for n in NAMES[typ] if n not in used])
            used.add(name)
            words = name.split()
            spans[slot] = (len(tokens), len(tokens) + len(words))
            tokens += words
            labels += ["B-" + LABEL[typ]] + ["I-" + LABEL[typ]] * (len(words) - 1)
        else:
            tokens.append(pre + _filler(rng, slot) + post)
            labels.append("O")
    return tokens, labels, spans


def fill_new(rng: random.Random, seen: set, template: str, marks: dict[str, str] | None = None):
    """`fill`, drawn again until the text is one no split has yet (no tweet twice in the sample)."""
    while True:
        tokens, labels, spans = fill(rng, template, marks)
        if " ".join(tokens) not in seen:
            seen.add(" ".join(tokens))
            return tokens, labels, spans


def _splits(rng: random.Random, templates: list) -> dict[str, list]:
    """Each split cycles through every template (shuffled), so train covers every pattern."""
    out = {}
    for split, n in SIZES.items():
        order = []
        while len(order) < n:
            block = list(templates)
            rng.shuffle(block)
            order += block
        out[split] = order[:n]
    return out


def mner_files(rng: random.Random) -> dict[str, str]:
    files, seen = {}, set()
    for split, templates in _splits(rng, MNER_TEMPLATES).items():
        tweets = []
        for i, (template, theme) in enumerate(templates):
            tokens, labels, _ = fill_new(rng, seen, template)
            # one tweet in train and one in test point at an image that does not exist
            image = MISSING_IMAGE if (split, i) in (("train", 5), ("test", 3)) else MNER_IMAGE[theme]
            tweets.append(f"IMGID:{image}\n" + "".join(f"{t}\t{lab}\n" for t, lab in zip(tokens, labels)))
        files[f"{split}.txt"] = "\n".join(tweets)
    files["captions.txt"] = "".join(f"{MNER_IMAGE[t]}.jpg :{THEMES[t][0]}\n" for t in THEMES)
    return files


def mnre_files(rng: random.Random) -> dict[str, str]:
    files = {"rel2id.json": json.dumps({r: i for i, r in enumerate(RELATIONS)}, separators=(",", ":"))}
    seen: set[str] = set()
    for split, templates in _splits(rng, MNRE_TEMPLATES).items():
        lines, images = [], {}
        for i, (template, relation, htype, ttype, theme) in enumerate(templates):
            tokens, _, spans = fill_new(rng, seen, template, {"h": htype, "t": ttype})
            img = MNRE_BLANK_IMAGE if (split, i) == ("valid", 2) else f"sample_{theme}.jpg"
            images[img] = "" if img == MNRE_BLANK_IMAGE else THEMES[theme][0]
            row = {"token": tokens}
            for key in ("h", "t"):
                s, e = spans[key]
                row[key] = {"name": " ".join(tokens[s:e]), "pos": [s, e]}
            row.update(img_id=img, relation=relation)
            lines.append(repr(row) + "\n")
        files[f"mnre_{MNRE_FILES[split]}.txt"] = "".join(lines)
        caps = [{"img_id": k, "text": v} for k, v in sorted(images.items())]
        if split == "train":  # the published files carry a placeholder row for `inf.png`
            caps.insert(len(caps) // 2, {"img_id": "inf.png", "text": "a blurry photo of a person"})
        files[f"captions/blip_{MNRE_FILES[split]}.txt"] = "".join(repr(c) + "\n" for c in caps)
    return files


def draw(theme: str) -> Image.Image:
    _, bg, fg, shape = THEMES[theme]
    img = Image.new("RGB", (64, 64), bg)
    d = ImageDraw.Draw(img)
    if shape == "sun":
        d.rectangle([0, 44, 63, 63], fill=(230, 210, 150))
        d.ellipse([38, 6, 56, 24], fill=fg)
    elif shape == "lines":
        d.line([32, 0, 32, 63], fill=fg, width=2)
        d.ellipse([22, 22, 42, 42], outline=fg, width=2)
    elif shape == "cone":
        d.polygon([(32, 4), (12, 60), (52, 60)], fill=fg)
    elif shape == "towers":
        for x, h in ((4, 40), (18, 55), (32, 30), (46, 48)):
            d.rectangle([x, 63 - h, x + 11, 63], fill=fg)
    elif shape == "ground":
        d.rectangle([0, 40, 63, 63], fill=fg)
    else:
        d.rectangle([14, 20, 50, 40], fill=fg)
    return img


def write(out: Path, seed: int = 13) -> dict[str, int]:
    """Write both samples under `out` (mner/, mnre/). Same seed, same files."""
    rng = random.Random(seed)
    texts = {**{f"mner/{k}": v for k, v in mner_files(rng).items()},
             **{f"mnre/{k}": v for k, v in mnre_files(rng).items()}}
    for rel, text in texts.items():
        with atomic_write(out / rel) as fh:
            fh.write(text)
    images = {f"mner/images/{MNER_IMAGE[t]}.jpg": t for t in THEMES}
    images.update({f"mnre/images/sample_{t}.jpg": t for t in THEMES})
    images[f"mnre/images/{MNRE_BLANK_IMAGE}"] = "snow"
    for rel, theme in images.items():
        with atomic_write(out / rel, "wb") as fh:
            draw(theme).save(fh, format="JPEG", quality=85)
    return {"text_files": len(texts), "images": len(images)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cotpd sample", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     parents=[common(params=False)])
    parser.add_argument("--out", type=Path, default=SAMPLE_DIR, help=f"output folder (default {SAMPLE_DIR})")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    setup_logging(args)
    counts = write(args.out, args.seed)
    print(f"wrote {counts['text_files']} text files and {counts['images']} images under {args.out}")
    return 0
