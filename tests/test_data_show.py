"""`t5x-lite tasks list / show` text."""

from t5x_lite.config import base_config
from t5x_lite.data import show
from t5x_lite.data.vocabularies import ByteVocabulary


def test_list_tasks_names_every_objective():
  text = show.list_tasks()
  for name in ("pydoc_causal_lm", "pydoc_mlm", "pydoc_span_corruption", "pydoc_prefix_lm"):
    assert f"  {name} " in text
  assert "span_corruption(noise_density=0.15, mean_noise_span_length=3.0)" in text


def test_show_span_corruption_and_mlm():
  config, vocabulary = base_config(), ByteVocabulary(extra_ids=100)
  text = show.show_task("pydoc_span_corruption", config, vocabulary, num_examples=2)
  assert "feature lengths: {'targets': 29, 'inputs': 128}" in text
  assert "after span_corruption:" in text and "<extra_id_0>" in text
  assert "packing efficiency: 100.0% non-padding tokens" in text
  assert text.count("    [row ") == 2
  text = show.show_task("pydoc_mlm", config, vocabulary, num_examples=1)
  assert "[CLS]" in text and "[SEP]" in text and "[MASK]" in text
  assert "nsp_labels:" in text and "encoder_token_type_ids:" in text
