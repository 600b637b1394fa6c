"""The embedded dataset's world: the app's event catalogue (browse and funnel events, their codes), the
planted effects of the embedded default (per event type, per named store, per position bin), the
first-order behaviour that strings events into sessions (transitions, the wait after each event), and
the stores (a named head and a generated tail). :mod:`attribution.generate` draws sessions from it;
:mod:`attribution.scenarios` draws other effects over the same catalogue."""

from __future__ import annotations

import numpy as np
import pandas as pd

from attribution.schema import (
    DEFAULT_FUNNEL_EVENTS,
    POSITION_BIN_UPPER,
    POSITION_BINS,
)

# ---- the app's event catalogue -------------------------------------------------------------------
BROWSE_EVENTS = (
    "home_page_load",  # 0
    "m_card_view",  # 1
    "m_card_click",  # 2
    "store_page_load",  # 3
    "m_search_query",  # 4
    "m_search_result_click",  # 5
    "m_select_tab",  # 6
    "m_app_background",  # 7
    "m_app_foreground",  # 8
    "m_promo_banner_view",  # 9
    "m_store_page_load_error",  # 10: contains "error", left out of the model input
)
FUNNEL_EVENTS = DEFAULT_FUNNEL_EVENTS  # the original analysis's funnel, in the order of the codes below
ALL_EVENTS = BROWSE_EVENTS + FUNNEL_EVENTS
UNKNOWN_EVENT = "m_legacy_widget_tap"  # a dirty row: not in the catalogue
N_BROWSE = len(BROWSE_EVENTS)
(HOME, VIEW, CLICK, PAGE, SEARCH, RESULT, TAB, BACKGROUND, FOREGROUND, PROMO, ERROR) = range(N_BROWSE)
(ADD, QUICK_ADD, CART, CHECKOUT, PLACE, SUCCESS) = range(N_BROWSE, N_BROWSE + len(FUNNEL_EVENTS))

# Planted effect on the conversion logit of one occurrence at an early position.
EVENT_EFFECTS = {
    "home_page_load": 0.0,
    "m_card_view": -0.09,
    "m_card_click": 0.60,
    "store_page_load": 0.80,
    "m_search_query": 0.30,
    "m_search_result_click": 0.50,
    "m_select_tab": 0.0,
    "m_app_background": -0.90,
    "m_app_foreground": -0.15,
    "m_promo_banner_view": 0.08,
    "m_store_page_load_error": 0.0,
}
# Early events matter more than late ones: weight by 1-based position bucket (the original analysis's buckets).
POSITION_WEIGHTS = dict(zip(POSITION_BINS, (1.0, 0.6, 0.35, 0.15, 0.05), strict=True))

# First-order behaviour: P(next browse event | current). Rows sum to 1.
_T = np.zeros((N_BROWSE, N_BROWSE))
_T[HOME, [VIEW, SEARCH, TAB, PROMO, BACKGROUND, CLICK]] = [0.55, 0.12, 0.10, 0.10, 0.08, 0.05]
_T[VIEW, [VIEW, CLICK, SEARCH, TAB, BACKGROUND, PROMO, HOME]] = [0.45, 0.18, 0.06, 0.08, 0.08, 0.05, 0.10]
_T[CLICK, [PAGE, ERROR, VIEW, BACKGROUND]] = [0.85, 0.03, 0.07, 0.05]
_T[PAGE, [VIEW, CLICK, SEARCH, TAB, BACKGROUND, HOME, PAGE, ERROR]] = [0.35, 0.10, 0.10, 0.10, 0.12, 0.15, 0.03, 0.05]
_T[SEARCH, [RESULT, SEARCH, VIEW, BACKGROUND, HOME]] = [0.45, 0.20, 0.15, 0.10, 0.10]
_T[RESULT, [PAGE, ERROR, VIEW]] = [0.85, 0.05, 0.10]
_T[TAB, [VIEW, HOME, SEARCH, BACKGROUND, PROMO]] = [0.50, 0.20, 0.10, 0.10, 0.10]
_T[BACKGROUND, [FOREGROUND, HOME]] = [0.85, 0.15]
_T[FOREGROUND, [HOME, VIEW, PAGE]] = [0.40, 0.40, 0.20]
_T[PROMO, [VIEW, CLICK, HOME, BACKGROUND]] = [0.50, 0.20, 0.20, 0.10]
_T[ERROR, [HOME, PAGE, VIEW]] = [0.40, 0.30, 0.30]
TRANSITIONS = _T
INITIAL = np.zeros(N_BROWSE)
INITIAL[[HOME, VIEW, SEARCH, FOREGROUND]] = [0.50, 0.25, 0.10, 0.15]
# Mean seconds until the next event, by the current event.
MEAN_GAP_S = np.array([8.0, 5.0, 3.0, 35.0, 10.0, 3.0, 6.0, 240.0, 8.0, 6.0, 4.0])

CARD_FEATURES = (
    "Home Feed",
    "Traditional Carousel",
    "Offers Hub",
    "Cuisine Filter",
    "DashPass Carousel",
    "Reorder Carousel",
)
SEARCH_FEATURE = "Core Search"

# ---- stores --------------------------------------------------------------------------------------
NAMED_STORES = (
    ("McDonald's", "Burgers", "QSR"),
    ("Chipotle", "Mexican", "Fast Casual"),
    ("Starbucks", "Coffee", "QSR"),
    ("Taco Bell", "Mexican", "QSR"),
    ("Subway", "Sandwiches", "QSR"),
    ("Chick-fil-A", "Chicken", "QSR"),
    ("Panera Bread", "Bakery", "Fast Casual"),
    ("Wendy's", "Burgers", "QSR"),
    ("Burger King", "Burgers", "QSR"),
    ("Domino's", "Pizza", "QSR"),
    ("Pizza Hut", "Pizza", "QSR"),
    ("Sweetgreen", "Salads", "Fast Casual"),
    ("Shake Shack", "Burgers", "Fast Casual"),
    ("Five Guys", "Burgers", "Fast Casual"),
    ("Panda Express", "Chinese", "QSR"),
    ("Dunkin'", "Coffee", "QSR"),
    ("Popeyes", "Chicken", "QSR"),
    ("Wingstop", "Chicken", "QSR"),
    ("7-Eleven", "Convenience", "New Vertical"),
    ("Safeway", "Grocery", "New Vertical"),
)
NAMED_STORE_EFFECTS = {
    "McDonald's": 0.60,
    "Chipotle": 0.50,
    "Starbucks": 0.45,
    "Chick-fil-A": 0.40,
    "Sweetgreen": 0.35,
    "Pizza Hut": -0.40,
    "7-Eleven": -0.30,
}
_TAIL_CUISINES = (
    ("Thai", "Thai"),
    ("Sushi", "Japanese"),
    ("Pho", "Vietnamese"),
    ("Taqueria", "Mexican"),
    ("Curry House", "Indian"),
    ("Pizzeria", "Pizza"),
    ("Deli", "Sandwiches"),
    ("Wok", "Chinese"),
    ("Grill", "American"),
    ("Bakery", "Bakery"),
    ("Market", "Grocery"),
    ("Liquor", "Alcohol"),
)
_TAIL_ADJ = ("Golden", "Lucky", "Blue", "Corner", "Happy", "Little", "Urban", "Old Town", "Sunset", "Green")
NEW_VERTICAL_CATEGORIES = ("Convenience", "Grocery", "Alcohol")
STORE_ID_BASE = 10000
CLICKLIKE = (CLICK, PAGE, RESULT)  # events where the store's planted effect applies


def store_table(n_stores: int) -> pd.DataFrame:
    """The stores dimension: named chains first (most popular), then a long tail. Deterministic."""
    rows = []
    for i in range(n_stores):
        if i < len(NAMED_STORES):
            name, category, tag = NAMED_STORES[i]
        else:
            j = i - len(NAMED_STORES)
            noun, category = _TAIL_CUISINES[j % len(_TAIL_CUISINES)]
            adj = _TAIL_ADJ[(j // len(_TAIL_CUISINES)) % len(_TAIL_ADJ)]
            name = f"{adj} {noun} #{j}"
            tag = "New Vertical" if category in NEW_VERTICAL_CATEGORIES else "Local"
        rows.append(
            {
                "store_id": STORE_ID_BASE + i,
                "store_name": name,
                "store_category": category,
                "store_tag": tag,
                "is_new_vertical": category in NEW_VERTICAL_CATEGORIES,
            }
        )
    return pd.DataFrame(rows)


def store_effects(n_stores: int) -> np.ndarray:
    eff = np.zeros(n_stores)
    for i, (name, _, _) in enumerate(NAMED_STORES[:n_stores]):
        eff[i] = NAMED_STORE_EFFECTS.get(name, 0.0)
    return eff


def position_weight_for(positions_1based: np.ndarray) -> np.ndarray:
    weights = np.array([POSITION_WEIGHTS[b] for b in POSITION_BINS])
    return weights[np.searchsorted(np.asarray(POSITION_BIN_UPPER), positions_1based, side="left")]
