"""A deterministic generator of short English texts for the project's own small models.

Every text is one line of 15-40 words that starts with a type marker usable as a
prompt: ``"Biography:"`` or ``"Review:"``. Biographies use gendered pronouns
(she/her or he/him); reviews (products, restaurants, movies, books, hotels) use no
gendered pronouns, so that the "female" feature is a property of biographies only.

The generator controls the rates of the three features the project's example
targets constrain, so that the small models trained on the corpus have base rates
that are neither trivial nor saturated:

============================  =========  =====================================
feature                        corpus     definition (see the helpers below)
============================  =========  =====================================
female biography               ~12.5 %    25 % of biographies, biographies ~50 %
word "amazing"                 ~10 %      whole word, case-insensitive
positive (VADER)               ~26 %      compound >= 0.05
============================  =========  =====================================

The labels are enforced, not hoped for: each text is drawn for a chosen
(type, gender, positive, amazing) cell and redrawn until VADER, the "amazing"
check and the word-count bounds agree with that cell.

API: ``generate_corpus(n, seed=0) -> list[str]`` and the feature helpers
``has_amazing``, ``is_female``, ``is_positive``, ``text_rates``.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache

__all__ = [
    "BIO_FRACTION",
    "FEMALE_FRACTION",
    "POSITIVE_FRACTION",
    "AMAZING_FRACTION",
    "MIN_WORDS",
    "MAX_WORDS",
    "generate_corpus",
    "generate_text",
    "has_amazing",
    "is_female",
    "is_positive",
    "vader_compound",
    "text_rates",
]

MIN_WORDS = 15
MAX_WORDS = 40

# Fractions of the corpus. Overall expected rates:
#   female   = BIO_FRACTION * FEMALE_FRACTION                     = 0.125
#   positive = 0.5 * 0.16 + 0.5 * 0.36                            = 0.26
# (positive sits low in the 25-35 % band because models trained on the corpus
# over-produce positive texts a little: mixing sentences of different polarity
# tips VADER's compound score positive more often than negative.)
#   amazing  = 0.5 * 0.04 + 0.5 * 0.16                            = 0.10
BIO_FRACTION = 0.5
FEMALE_FRACTION = 0.25  # of biographies
POSITIVE_FRACTION = {"bio": 0.16, "review": 0.36}
AMAZING_FRACTION = {"bio": 0.04, "review": 0.16}
# Of the texts that contain "amazing", the share that is in a positive text
# (the rest use it negated: "not amazing", "nothing amazing").
AMAZING_POSITIVE_SHARE = 0.75

# --------------------------------------------------------------------------
# Feature helpers (shared with the models' `rates` command and the tests).
# --------------------------------------------------------------------------

_AMAZING_RE = re.compile(r"\bamazing\b", re.IGNORECASE)
_WORD_RE = re.compile(r"[A-Za-z']+")
FEMALE_WORDS = frozenset({"she", "her", "hers", "herself"})
MALE_WORDS = frozenset({"he", "him", "his", "himself"})


def has_amazing(text: str) -> bool:
    """True iff the whole word "amazing" occurs (case-insensitive)."""
    return _AMAZING_RE.search(text) is not None


def pronoun_counts(text: str) -> tuple[int, int]:
    """(female, male) pronoun counts over whole words, case-insensitive."""
    f = m = 0
    for w in _WORD_RE.findall(text.lower()):
        if w in FEMALE_WORDS:
            f += 1
        elif w in MALE_WORDS:
            m += 1
    return f, m


def is_female(text: str) -> bool:
    """A female biography: more she/her/hers/herself than he/him/his/himself."""
    f, m = pronoun_counts(text)
    return f > m


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_compound(text: str) -> float:
    """VADER's compound sentiment score of ``text``, in [-1, 1] (needs the vaderSentiment package)."""
    return float(_vader().polarity_scores(text)["compound"])


def is_positive(text: str) -> bool:
    """Positive by VADER: compound >= 0.05."""
    return vader_compound(text) >= 0.05


def text_rates(texts: list[str]) -> dict[str, float]:
    """Rates of the three features plus mean length (words) over ``texts``."""
    n = max(len(texts), 1)
    return {
        "n": len(texts),
        "amazing": sum(has_amazing(t) for t in texts) / n,
        "female": sum(is_female(t) for t in texts) / n,
        "positive": sum(is_positive(t) for t in texts) / n,
        "biography": sum(t.lstrip().startswith("Biography:") for t in texts) / n,
        "review": sum(t.lstrip().startswith("Review:") for t in texts) / n,
        "mean_words": sum(len(t.split()) for t in texts) / n,
    }


# --------------------------------------------------------------------------
# Word lists.
# --------------------------------------------------------------------------

FEMALE_NAMES = """Maria Anna Sofia Emma Olivia Ava Mia Isabella Amelia Harper Evelyn Abigail
Emily Ella Grace Chloe Lily Hannah Zoe Nora Layla Aria Leah Hazel Ruby Alice Clara Julia
Laura Sara Elena Rosa Lucia Carmen Ines Beatriz Marta Paula Irene Nadia Amira Fatima Leila
Yasmin Priya Anjali Meera Aisha Keiko Yuki Mei Lin Hana Jia Ngozi Amara Zainab Imani Tanya
Olga Katya Ingrid Astrid Freya Sigrid Margot Claire Camille Louise Rachel Naomi Miriam Esther
Diana Helen Susan Karen Linda Patricia Monica Teresa Gloria Veronica Alma Daisy Iris Jade
Joanna Kate Megan Molly Nina Paige Tessa Vera Wendy""".split()

MALE_NAMES = """James John Robert Michael David William Richard Joseph Thomas Charles Daniel
Matthew Anthony Mark Steven Paul Andrew Joshua Kevin Brian George Edward Ryan Jacob Gary
Nicholas Eric Jonathan Stephen Larry Justin Scott Brandon Frank Samuel Gregory Alexander
Patrick Jack Dennis Jerry Tyler Aaron Henry Adam Nathan Peter Zachary Kyle Noah Ethan Lucas
Mason Logan Oliver Elijah Liam Carlos Diego Javier Miguel Luis Pablo Mateo Rafael Omar Karim
Hassan Tariq Yusuf Ravi Arjun Vikram Rohan Kenji Hiroshi Takeshi Wei Jun Chen Kwame Chidi
Tunde Kofi Ivan Dmitri Sergei Lars Erik Anders Pierre Louis Hugo Marco Luca Felix Oscar
Simon Victor Walter Colin Dylan Gavin Ian Owen Reed""".split()

LAST_NAMES = """Lopez Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez
Hernandez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White
Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen
Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Patel Shah
Kim Park Chen Wang Tanaka Sato Suzuki Okafor Mensah Adeyemi Kowalski Novak Ivanova Petrov
Schmidt Fischer Weber Muller Rossi Bianchi Romano Dubois Laurent Moreau Silva Santos Costa
Oliveira Jensen Larsen Nilsson Berg Murphy Kelly Sullivan Walsh Byrne Cohen Levi Haddad
Khan Ali Singh Gupta Mehta Reyes Cruz Morales Ortiz Castillo Vargas Fox Stone Ward Brooks
Price Bennett Gray Hughes Foster Bell Reed Cole""".split()

JOBS = ["nurse", "teacher", "engineer", "architect", "accountant", "pharmacist",
        "electrician", "plumber", "carpenter", "chef", "baker", "librarian", "journalist",
        "photographer", "lawyer", "dentist", "veterinarian", "firefighter", "pilot",
        "mechanic", "farmer", "florist", "translator", "economist", "geologist", "biologist",
        "chemist", "physicist", "statistician", "programmer", "designer", "editor",
        "historian", "paramedic", "surgeon", "therapist", "counselor", "social worker",
        "police officer", "bus driver", "truck driver", "tailor", "barber", "musician",
        "painter", "sculptor", "potter", "jeweler", "welder", "surveyor", "meteorologist",
        "astronomer", "zookeeper", "park ranger", "lifeguard", "real estate agent",
        "bank teller", "insurance agent", "data analyst", "web developer", "sound engineer",
        "film editor", "museum curator", "school principal", "midwife", "optician",
        "radiologist", "nutritionist", "landscaper", "beekeeper", "fisherman", "shipbuilder",
        "locksmith", "bookbinder", "cartographer"]

CITIES = """Denver Boston Chicago Seattle Portland Austin Dallas Houston Phoenix Atlanta Miami
Orlando Tampa Nashville Memphis Detroit Cleveland Pittsburgh Baltimore Philadelphia Richmond
Raleigh Charlotte Omaha Tulsa Albuquerque Tucson Sacramento Fresno Oakland Spokane Boise
Madison Milwaukee Minneapolis Toronto Montreal Vancouver Calgary Ottawa Dublin London
Manchester Leeds Glasgow Edinburgh Cardiff Paris Lyon Marseille Madrid Seville Valencia
Lisbon Porto Rome Milan Naples Turin Berlin Munich Hamburg Vienna Zurich Geneva Oslo Bergen
Stockholm Copenhagen Helsinki Warsaw Krakow Prague Budapest Athens Istanbul Cairo Nairobi
Lagos Accra Johannesburg Mumbai Delhi Chennai Bangalore Tokyo Osaka Seoul Busan Manila
Jakarta Sydney Melbourne Auckland Lima Bogota Santiago""".split()

SUBJECTS = ["nursing", "biology", "chemistry", "physics", "mathematics", "history",
            "economics", "philosophy", "architecture", "music", "painting", "law", "medicine",
            "engineering", "accounting", "journalism", "geology", "agriculture", "statistics",
            "computer science", "linguistics", "psychology", "sociology", "education",
            "literature", "design", "photography", "anthropology", "astronomy", "ecology",
            "nutrition", "civil engineering", "public health", "marine biology",
            "graphic design"]

SCHOOLS = ["the University of " + c for c in ["Michigan", "Texas", "Toronto", "Edinburgh",
                                               "Washington", "Oregon", "Arizona", "Colorado",
                                               "Utah", "Iowa", "Kansas", "Leeds", "Sydney",
                                               "Lisbon", "Vienna", "Oslo", "Nairobi", "Lagos",
                                               "Manila", "Chicago"]]
SCHOOLS += ["Ohio State", "a community college", "a small college in " + "Vermont",
            "a night school", "a technical institute", "an art school in Chicago",
            "a university in Madrid", "a college near Boston", "a school in Osaka",
            "a polytechnic in Milan", "a nursing school in Denver", "a trade school"]

ORGS = ["a hospital", "a public school", "a small firm", "a city library", "a local bakery",
        "a shipping company", "a bank", "a newspaper", "a design studio", "a research lab",
        "a family farm", "a car repair shop", "an airline", "a theater", "a law office",
        "a software company", "a museum", "a clinic", "a hotel", "a radio station",
        "a construction company", "a bookshop", "a train company", "a printing shop",
        "the city council", "a water utility", "a furniture workshop", "a flower shop"]

FAMILY = ["two children", "three kids", "a teenage son", "a young daughter", "an old dog",
          "two cats", "a parrot", "a large family", "an elderly father", "a younger brother",
          "a roommate", "a partner and two dogs", "twin daughters", "a grown son"]

HOBBIES_NEUTRAL = ["repairs old bicycles", "collects stamps", "grows tomatoes",
                   "repairs old radios", "builds model trains", "bakes bread",
                   "runs on the beach", "swims in the lake", "knits scarves",
                   "keeps bees", "paints landscapes", "studies old maps",
                   "practices the piano", "bird watches in the park", "sails on weekends",
                   "climbs in the mountains", "cooks for the neighbors",
                   "volunteers at the food bank", "coaches a youth soccer team",
                   "writes short stories", "reads history books", "walks the dog for hours",
                   "takes night classes in Spanish", "rides a motorcycle",
                   "builds furniture in the garage", "practices the drums"]

POS_TRAITS = ["kind", "generous", "brilliant", "patient", "funny", "warm", "cheerful",
              "talented", "thoughtful", "honest", "helpful", "wise", "brave", "friendly",
              "caring", "creative", "clever", "loyal", "gentle", "inspiring"]
NEUTRAL_TRAITS = ["quiet", "precise", "reserved", "direct", "private", "practical", "formal",
                  "busy", "particular", "blunt", "unpredictable", "punctual", "tidy",
                  "talkative", "tall", "organized"]
NEG_TRAITS = ["stubborn", "impatient", "rude", "cold", "arrogant", "difficult", "lazy",
              "careless", "moody", "bitter", "harsh", "unreliable"]
RELATIONS = ["colleagues", "students", "neighbors", "patients", "clients",
             "coworkers", "customers", "former teachers", "employees", "teammates"]
TOPICS = ["bridges", "rural schools", "water pipes", "school meals", "public parks",
          "flood barriers", "early reading", "bus routes", "kidney research",
          "local history", "solar power", "rare birds", "hospital waiting times",
          "river pollution", "old houses", "child nutrition"]

# --- reviews ---
BRANDS = ["Nordwell", "Apex", "Lumio", "Brightline", "Kestrel", "Vanta", "Orion", "Halden",
          "Pivot", "Zephyr", "Corvo", "Trident", "Meridian", "Solace", "Quill", "Bramble",
          "Ferro", "Tundra", "Aster", "Nimbus"]
PRODUCTS = {
    "blender": ["motor", "jar", "lid", "blades", "noise level"],
    "laptop": ["battery", "screen", "keyboard", "cooling vent", "trackpad"],
    "pair of headphones": ["sound", "battery", "ear cushions", "microphone", "case"],
    "coffee maker": ["carafe", "timer", "filter", "water tank", "coffee"],
    "robot vacuum": ["suction", "battery", "brush", "dust bin", "cord"],
    "backpack": ["zippers", "straps", "fabric", "pockets", "frame"],
    "desk lamp": ["light", "switch", "base", "arm", "bulb"],
    "air fryer": ["basket", "timer", "display", "coating", "cooling vent"],
    "electric kettle": ["lid", "handle", "switch", "base", "heating time"],
    "pair of running shoes": ["sole", "laces", "sizing", "padding", "grip"],
    "rain jacket": ["hood", "zipper", "fabric", "seams", "sizing"],
    "office chair": ["seat", "armrests", "wheels", "backrest", "height lever"],
    "keyboard": ["keys", "cable", "backlight", "switches", "feet"],
    "smartwatch": ["battery", "strap", "screen", "step counter", "app"],
    "toaster": ["slots", "lever", "timer", "crumb tray", "dial"],
    "camera": ["lens", "autofocus", "battery", "menu", "grip"],
    "portable speaker": ["sound", "bass", "battery", "buttons", "charging port"],
    "tent": ["poles", "zipper", "rain fly", "floor", "stakes"],
    "yoga mat": ["surface", "grip", "thickness", "strap", "smell"],
    "phone case": ["buttons", "edges", "clip", "finish", "sizing"],
    "electric toothbrush": ["battery", "brush head", "timer", "charger", "handle"],
    "printer": ["ink", "paper tray", "scanner", "app", "setup"],
    "mattress": ["foam", "edges", "cover", "springs", "smell"],
    "frying pan": ["coating", "handle", "base", "lid", "weight"],
}
CUISINES = ["Italian", "Thai", "Mexican", "Indian", "Japanese", "Greek", "Lebanese",
            "Korean", "Vietnamese", "French", "Ethiopian", "Spanish", "Turkish", "Chinese",
            "Peruvian", "Moroccan", "Brazilian", "German", "vegan", "seafood"]
DISHES = ["pasta", "curry", "tacos", "ramen", "pizza", "dumplings", "soup", "burger",
          "risotto", "grilled fish", "lamb stew", "fried rice", "salad", "steak", "noodles",
          "flatbread", "pancakes", "chicken wings", "paella", "dessert", "bread", "sushi"]
PLACE_WORDS = ["Garden", "Corner", "Kitchen", "Table", "Harbor", "Lantern", "Olive",
               "Copper", "Market", "Oak", "Bistro", "Spoon", "Fig", "Salt", "Ember"]
RESTAURANT_PARTS = ["service", "wait", "portions", "prices", "music", "tables", "menu",
                    "drinks", "staff", "room"]
# Genre, title and part names carry no VADER valence (no "comedy", "romance",
# "horror", "Promise", "support"...): sentiment comes from the opinion words only.
GENRES = ["drama", "western", "science fiction film", "musical", "mystery", "documentary",
          "family film", "heist film", "sports drama", "fantasy film", "animated film",
          "period piece", "road movie", "spy film"]
BOOK_GENRES = ["mystery", "fantasy", "science fiction", "historical", "detective",
               "coming of age", "literary", "western"]
PLOTS = ["a small town hit by a storm", "two brothers who run a failing hotel",
         "a crew stranded on a distant planet", "a heist at a museum in Paris",
         "a family that moves to the countryside", "a band on its last tour",
         "a detective chasing a forger", "a village that hides a secret",
         "a chess prodigy and a stubborn coach", "a ship lost in the Arctic",
         "a rivalry between two bakeries", "a robot that learns to cook",
         "a journalist who uncovers a scandal", "a group of cousins on a road trip",
         "a city without electricity", "a haunted lighthouse",
         "a courtroom fight over a will", "a boxer returning to the ring",
         "a dragon guarding a mountain pass", "an island with no adults",
         "a spy who forgets everything", "a strike at a car factory"]
TITLE_WORDS_A = ["The Last", "The Silent", "A Distant", "The Painted", "The Golden", "Red",
                 "The Long", "Midnight", "The Hidden", "Cold", "The Second", "Paper",
                 "The Quiet", "Iron", "The Northern", "Summer", "The Glass", "Wild"]
TITLE_WORDS_B = ["Harbor", "River", "Signal", "Garden", "Winter", "Road", "Kingdom",
                 "Letter", "Orchard", "Tower", "Machine", "Bridge", "Compass", "Frontier",
                 "Island", "Season", "Crown", "Station"]
MOVIE_PARTS = ["acting", "plot", "pacing", "ending", "music", "dialogue", "script",
               "cast", "camera work", "soundtrack", "visual effects", "first hour"]
BOOK_PARTS = ["prose", "plot", "pacing", "ending", "characters", "dialogue",
              "first chapter", "middle section", "world building", "twist"]
HOTEL_WORDS = ["Granite", "Harbor", "Plaza", "Royal", "Park", "Riverside", "Central",
               "Summit", "Lakeside", "Meridian", "Crown", "Station"]
HOTEL_PARTS = ["room", "bed", "breakfast", "staff", "view", "shower", "pool", "lobby",
               "wifi", "location", "check in", "parking"]

POS_ADJ = ["great", "excellent", "wonderful", "lovely", "fantastic", "superb", "impressive",
           "perfect", "beautiful", "brilliant", "good", "nice", "fun", "solid", "charming",
           "outstanding", "pleasant", "delightful"]
NEG_ADJ = ["bad", "terrible", "awful", "disappointing", "poor", "weak", "boring", "dull",
           "horrible", "flimsy", "messy", "annoying", "ugly", "painful", "useless",
           "frustrating", "miserable", "sloppy"]
NEUTRAL_ADJ = ["average", "standard", "ordinary", "typical", "plain", "simple", "unremarkable",
               "basic", "predictable", "about what I expected", "not what I expected",
               "unusual", "forgettable", "so-so", "mediocre"]
FOOD_POS = ["delicious", "fresh", "tasty", "perfectly cooked", "rich and flavorful"]
FOOD_NEG = ["bland", "stale", "burnt", "cold and greasy", "tasteless", "overcooked"]
TIME_AGO = ["last month", "two weeks ago", "in March", "for my birthday", "last year",
            "a few days ago", "on sale", "for a new flat", "after reading reviews",
            "to replace my old one", "in the spring", "for a camping trip"]
WHO = ["I", "We", "My sister", "My partner", "My father", "My roommate", "My neighbor",
       "My son", "My daughter", "My cousin"]

VERDICT_POS = ["I would recommend it to anyone.", "Highly recommended.",
               "We will definitely be back.", "Worth every penny.", "I love it.",
               "Best purchase this year.", "A real pleasure.", "Five stars from me.",
               "I would happily buy it again."]
VERDICT_NEG = ["I would not buy it again.", "Avoid it.", "One star.", "What a waste.",
               "I returned it after a week.", "We will not be back.",
               "I regret buying it.", "Not worth the price.", "A total letdown."]
VERDICT_NEUTRAL = ["It does the job.", "Three stars.", "Maybe wait for a sale.",
                   "I will update this after another week.", "It is what it is.",
                   "Your mileage may vary.", "I have mixed feelings.",
                   "I might try it again.", "It works as described."]


# --------------------------------------------------------------------------
# Composition.
# --------------------------------------------------------------------------


def _an(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _pick(rng: random.Random, seq):
    return seq[rng.randrange(len(seq))]


def _pronouns(female: bool) -> dict[str, str]:
    if female:
        return {"she": "she", "her": "her", "him": "her", "hers": "hers", "self": "herself"}
    return {"she": "he", "her": "his", "him": "him", "hers": "his", "self": "himself"}


def _bio(rng: random.Random, female: bool, positive: bool, amazing: bool) -> str:
    p = _pronouns(female)
    she, her, him, himself = p["she"], p["her"], p["him"], p["self"]
    first = _pick(rng, FEMALE_NAMES if female else MALE_NAMES)
    name = f"{first} {_pick(rng, LAST_NAMES)}"
    job, city = _pick(rng, JOBS), _pick(rng, CITIES)
    city2 = _pick(rng, [c for c in CITIES if c != city])
    intro = _pick(rng, [
        f"{name} is {_an(job)} from {city}.",
        f"{name} works as {_an(job)} in {city}.",
        f"Born in {city2}, {name} is {_an(job)} in {city}.",
        f"{name}, a {rng.randint(24, 67)} year old {job}, lives in {city}.",
        f"{name} has been {_an(job)} in {city} since {rng.randint(1985, 2021)}.",
    ])
    subject, school = _pick(rng, SUBJECTS), _pick(rng, SCHOOLS)
    org, org2 = rng.sample(ORGS, 2)
    n_years = rng.randint(2, 25)
    neutral = [
        f"{_cap(she)} studied {subject} at {school}.",
        f"{_cap(she)} earned a degree in {subject} from {school} in {rng.randint(1980, 2020)}.",
        f"After studying {subject} in {city2}, {she} moved to {city}.",
        f"{_cap(she)} trained as {_an(_pick(rng, JOBS))} before changing careers.",
        f"{_cap(she)} has worked at {org} for {n_years} years.",
        f"Before that, {she} spent {n_years} years at {org} in {city2}.",
        f"{_cap(she)} started {her} career at {org2} in {city2}.",
        f"{_cap(she)} lives with {_pick(rng, FAMILY)} near the old train station.",
        f"In {her} free time, {she} {_pick(rng, HOBBIES_NEUTRAL)}.",
        f"On weekends {she} {_pick(rng, HOBBIES_NEUTRAL)}.",
        f"{_cap(her)} {_pick(rng, RELATIONS)} say {she} is {_pick(rng, NEUTRAL_TRAITS)} and {_pick(rng, NEUTRAL_TRAITS)}.",
        f"{_cap(she)} describes {himself} as {_pick(rng, NEUTRAL_TRAITS)}.",
        f"{_cap(she)} is writing a report on {_pick(rng, TOPICS)}.",
        f"{_cap(she)} once lived in {city2} for {rng.randint(2, 9)} years.",
    ]
    pos = [
        f"{_cap(her)} {_pick(rng, RELATIONS)} say {she} is {_pick(rng, POS_TRAITS)} and {_pick(rng, POS_TRAITS)}.",
        f"{_cap(she)} won an award for {her} work on {_pick(rng, TOPICS)}.",
        f"Friends describe {him} as {_pick(rng, POS_TRAITS)} and {_pick(rng, POS_TRAITS)}.",
        f"{_cap(she)} loves {her} job and enjoys helping people.",
        f"{_cap(she)} is proud of {her} work on {_pick(rng, TOPICS)}.",
        f"People in {city} admire {him} for being {_pick(rng, POS_TRAITS)}.",
    ]
    neg = [
        f"{_cap(her)} {_pick(rng, RELATIONS)} say {she} is {_pick(rng, NEG_TRAITS)} and {_pick(rng, NEG_TRAITS)}.",
        f"{_cap(her)} first business failed after {rng.randint(2, 5)} years.",
        f"{_cap(she)} lost {her} job in {rng.randint(2001, 2022)} and struggled to find work.",
        f"{_cap(she)} says the long commute is exhausting.",
        f"Critics called {her} project on {_pick(rng, TOPICS)} a failure.",
        f"{_cap(she)} was injured in an accident in {city2}.",
        f"{_cap(she)} hates the cold winters in {city}.",
    ]
    amazing_pos = [
        f"{_cap(her)} {_pick(rng, RELATIONS)} call {him} an amazing {job}.",
        f"{_cap(she)} makes amazing bread on weekends.",
        f"{_cap(she)} says the view from {her} office is amazing.",
        f"{_cap(she)} has an amazing memory for names.",
    ]
    amazing_neg = [
        f"{_cap(she)} admits {her} first attempt was not amazing.",
        f"{_cap(she)} says there is nothing amazing about {her} job.",
        f"{_cap(she)} admits {her} cooking is not amazing.",
    ]
    parts = [intro]
    rng.shuffle(neutral)
    parts += neutral[: rng.randint(1, 2)]
    if positive:
        parts.append(_pick(rng, pos))
    elif rng.random() < 0.5:
        parts.append(_pick(rng, neg))
    else:
        parts += neutral[2:3]
    if amazing:
        sent = _pick(rng, amazing_pos if positive else amazing_neg)
        parts.insert(rng.randint(1, len(parts)), sent)
    return "Biography: " + " ".join(parts)


def _aspect_sentence(rng, part: str, pol: str, food: bool = False) -> str:
    if pol == "pos":
        adj = _pick(rng, FOOD_POS if food and rng.random() < 0.6 else POS_ADJ)
    elif pol == "neg":
        adj = _pick(rng, FOOD_NEG if food and rng.random() < 0.6 else NEG_ADJ)
    else:
        adj = _pick(rng, NEUTRAL_ADJ)
    verb = "were" if part.endswith("s") and not part.endswith("ss") else "was"
    return _pick(rng, [f"The {part} {verb} {adj}.", f"The {part} {verb} {adj}, overall.",
                       f"I thought the {part} {verb} {adj}."])


def _review(rng: random.Random, positive: bool, amazing: bool) -> str:
    kind = _pick(rng, ["product", "product", "restaurant", "movie", "book", "hotel"])
    who = _pick(rng, WHO)
    if kind == "product":
        product = _pick(rng, sorted(PRODUCTS))
        parts_pool = PRODUCTS[product] + ["price", "setup", "packaging", "instructions",
                                          "customer service", "design"]
        head = _pick(rng, [
            f"{who} bought the {_pick(rng, BRANDS)} {product} {_pick(rng, TIME_AGO)}.",
            f"This {_pick(rng, BRANDS)} {product} arrived {_pick(rng, TIME_AGO)}.",
            f"{who} ordered {_an(product)} from {_pick(rng, BRANDS)} {_pick(rng, TIME_AGO)}.",
            f"I have used the {_pick(rng, BRANDS)} {product} for {rng.randint(2, 11)} weeks now.",
        ])
        food = False
    elif kind == "restaurant":
        place = f"{_pick(rng, PLACE_WORDS)} {_pick(rng, ['Kitchen', 'House', 'Room', 'Cafe', 'Grill', 'Bar'])}"
        cuisine = _pick(rng, CUISINES)
        head = _pick(rng, [
            f"{who} had dinner at {place}, {_an(cuisine)} place in {_pick(rng, CITIES)}.",
            f"We tried the new {cuisine} restaurant {place} in {_pick(rng, CITIES)}.",
            f"Lunch at {place} in {_pick(rng, CITIES)}, a {cuisine} spot near the station.",
        ])
        parts_pool = [_pick(rng, DISHES), _pick(rng, DISHES)] + RESTAURANT_PARTS
        food = True
    elif kind == "movie":
        title = f"{_pick(rng, TITLE_WORDS_A)} {_pick(rng, TITLE_WORDS_B)}"
        head = _pick(rng, [
            f"{title} is {_an(_pick(rng, GENRES))} about {_pick(rng, PLOTS)}.",
            f"Watched {title} last night, {_an(_pick(rng, GENRES))} about {_pick(rng, PLOTS)}.",
            f"{title}, the new {_pick(rng, GENRES)}, follows {_pick(rng, PLOTS)}.",
        ])
        parts_pool = MOVIE_PARTS
        food = False
    elif kind == "book":
        title = f"{_pick(rng, TITLE_WORDS_A)} {_pick(rng, TITLE_WORDS_B)}"
        author = f"{_pick(rng, FEMALE_NAMES + MALE_NAMES)} {_pick(rng, LAST_NAMES)}"
        head = _pick(rng, [
            f"{title} by {author} is {_an(_pick(rng, BOOK_GENRES))} novel about {_pick(rng, PLOTS)}.",
            f"{who} read {title} by {author}, a story about {_pick(rng, PLOTS)}.",
        ])
        parts_pool = BOOK_PARTS
        food = False
    else:
        hotel = f"{_pick(rng, HOTEL_WORDS)} Hotel"
        head = _pick(rng, [
            f"We stayed {rng.randint(2, 7)} nights at the {hotel} in {_pick(rng, CITIES)}.",
            f"{who} booked the {hotel} in {_pick(rng, CITIES)} for a work trip.",
        ])
        parts_pool = HOTEL_PARTS
        food = False

    n_aspects = rng.randint(1, 3)
    aspects = rng.sample(parts_pool, k=min(n_aspects, len(parts_pool)))
    if positive:
        pols = ["pos" if rng.random() < 0.8 else _pick(rng, ["neg", "neu"]) for _ in aspects]
    else:
        pols = [_pick(rng, ["neg", "neg", "neu", "neu"]) if rng.random() < 0.9 else "pos"
                for _ in aspects]
    sents = [head] + [_aspect_sentence(rng, a, pol, food and a in DISHES)
                      for a, pol in zip(aspects, pols)]
    if amazing:
        thing = _pick(rng, aspects)
        verb = "were" if thing.endswith("s") and not thing.endswith("ss") else "was"
        if positive:
            sent = _pick(rng, [f"The {thing} {verb} amazing.", "Honestly amazing.",
                               "An amazing experience overall.", f"Simply amazing {thing}.",
                               "Amazing value for the money."])
        else:
            sent = _pick(rng, [f"The {thing} {verb} not amazing.", "Nothing amazing here.",
                               "Not amazing at all.", f"The {thing} {verb} nothing amazing."])
        sents.insert(rng.randint(1, len(sents)), sent)
    r = rng.random()
    if r < 0.7:
        if positive:
            sents.append(_pick(rng, VERDICT_POS))
        else:
            sents.append(_pick(rng, VERDICT_NEG if rng.random() < 0.5 else VERDICT_NEUTRAL))
    return "Review: " + " ".join(sents)


def _accept(text: str, positive: bool, amazing: bool) -> bool:
    n_words = len(text.split())
    if not (MIN_WORDS <= n_words <= MAX_WORDS):
        return False
    if has_amazing(text) != amazing:
        return False
    return is_positive(text) == positive


def generate_text(rng: random.Random, max_tries: int = 200) -> str:
    """One text; the (type, gender, positive, amazing) cell is drawn from ``rng``."""
    is_bio = rng.random() < BIO_FRACTION
    kind = "bio" if is_bio else "review"
    female = is_bio and rng.random() < FEMALE_FRACTION
    positive = rng.random() < POSITIVE_FRACTION[kind]
    # "amazing" is placed mostly in positive texts: keep the marginal rate at
    # AMAZING_FRACTION[kind] while 75 % of its occurrences are in positive texts.
    p_am = AMAZING_FRACTION[kind]
    p_pos = POSITIVE_FRACTION[kind]
    if positive:
        p_amazing = min(1.0, p_am * AMAZING_POSITIVE_SHARE / p_pos)
    else:
        p_amazing = min(1.0, p_am * (1 - AMAZING_POSITIVE_SHARE) / (1 - p_pos))
    amazing = rng.random() < p_amazing
    for _ in range(max_tries):
        text = (_bio(rng, female, positive, amazing) if is_bio
                else _review(rng, positive, amazing))
        if _accept(text, positive, amazing):
            return text
    raise RuntimeError(
        f"could not draw a text for cell bio={is_bio} female={female} "
        f"positive={positive} amazing={amazing} in {max_tries} tries")


def generate_corpus(n: int, seed: int = 0) -> list[str]:
    """``n`` texts, one line each, deterministic in ``seed``."""
    rng = random.Random(f"fdpg-ray-corpus-{seed}")
    return [generate_text(rng) for _ in range(n)]


def _main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the corpus here, one text a line")
    ap.add_argument("--show", type=int, default=10)
    args = ap.parse_args(argv)
    texts = generate_corpus(args.n, args.seed)
    for t in texts[: args.show]:
        print(t)
    stats = text_rates(texts)
    stats["distinct"] = len(set(texts))
    print(json.dumps(stats, indent=1))
    if args.out:
        from fdpg_ray.atomic import atomic_write_text

        atomic_write_text(args.out, "\n".join(texts) + "\n")


if __name__ == "__main__":
    _main()
