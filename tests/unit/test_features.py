import pandas as pd

from evergreen.features import learn_categories, to_model_frame


def test_model_frame_maps_unseen_categories_to_missing():
    train = pd.DataFrame({"carrier": ["UA", "AA"], "distance": [100, 200]})
    cats = learn_categories(train, ["carrier", "distance"], ["carrier"])
    x = to_model_frame(pd.DataFrame({"carrier": ["ZZ", "UA"], "distance": ["5", None]}), ["carrier", "distance"], cats)
    assert cats == {"carrier": ["AA", "UA"]}
    assert x["carrier"].isna().tolist() == [True, False]
    assert x["distance"].tolist()[0] == 5.0 and pd.isna(x["distance"].tolist()[1])
