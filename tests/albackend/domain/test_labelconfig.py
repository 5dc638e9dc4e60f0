"""Tests for albackend.domain.labelconfig: label config XML -> TaskSpec, and a clear ConfigError otherwise."""

from __future__ import annotations

import pytest

from albackend.domain.labelconfig import ConfigError, TaskSpec, parse_label_config

CLASSIFICATION = """
<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single">
    <Choice value="Positive"/>
    <Choice value="Negative"/>
    <Choice value="Neutral"/>
  </Choices>
</View>"""

MULTI = """
<View>
  <Text name="doc" value="$body"/>
  <Choices name="topics" toName="doc" choice="multiple">
    <Choice value="Sports"/><Choice value="Politics"/><Choice value="Tech"/>
  </Choices>
</View>"""

NER = """
<View>
  <Labels name="label" toName="text">
    <Label value="PER" background="red"/>
    <Label value="ORG" background="darkorange"/>
    <Label value="LOC" background="orange"/>
    <Label value="MISC" background="green"/>
  </Labels>
  <Text name="text" value="$sentence"/>
</View>"""


def test_classification_single():
    spec = parse_label_config(CLASSIFICATION)
    assert spec == TaskSpec(kind="classification", from_name="sentiment", to_name="text", value_key="text",
                            labels=("Positive", "Negative", "Neutral"), multi_label=False)


def test_classification_multiple():
    spec = parse_label_config(MULTI)
    assert spec.kind == "classification"
    assert spec.multi_label is True
    assert spec.from_name == "topics" and spec.to_name == "doc" and spec.value_key == "body"
    assert spec.labels == ("Sports", "Politics", "Tech")


def test_ner_labels_keep_config_order():
    spec = parse_label_config(NER)
    assert spec.kind == "tagging"
    assert spec.labels == ("PER", "ORG", "LOC", "MISC")  # config order, not sorted
    assert spec.from_name == "label" and spec.to_name == "text" and spec.value_key == "sentence"
    assert spec.multi_label is False


def test_to_name_wiring_picks_the_bound_text_field():
    """A second Text (shown for context) is fine when the control names its target clearly."""
    xml = """<View>
      <Text name="title" value="$headline"/>
      <Text name="body" value="$content"/>
      <Choices name="c" toName="body"><Choice value="x"/><Choice value="y"/></Choices>
    </View>"""
    spec = parse_label_config(xml)
    assert spec.to_name == "body"
    assert spec.value_key == "content"


def test_hypertext_and_choice_alias():
    xml = """<View><HyperText name="ht" value="$html"/>
      <Choices name="c" toName="ht"><Choice alias="A" value="Alpha"/><Choice value="Beta"/></Choices></View>"""
    spec = parse_label_config(xml)
    assert spec.value_key == "html"
    assert spec.labels == ("Alpha", "Beta")


def test_duplicate_label_values_are_kept_once():
    xml = """<View><Text name="t" value="$t"/>
      <Choices name="c" toName="t"><Choice value="a"/><Choice value="b"/><Choice value="a"/></Choices></View>"""
    assert parse_label_config(xml).labels == ("a", "b")


def test_spec_dict_round_trip():
    for xml in (CLASSIFICATION, MULTI, NER):
        spec = parse_label_config(xml)
        assert TaskSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("xml", ["", "   \n", None, 42])
def test_empty_config(xml):
    with pytest.raises(ConfigError, match="empty"):
        parse_label_config(xml)


@pytest.mark.parametrize("xml", ["<View><Text name='t' value='$t'>", "not xml at all", "<View></Vew>"])
def test_invalid_xml(xml):
    with pytest.raises(ConfigError, match="not valid XML"):
        parse_label_config(xml)


def test_image_only_config():
    xml = """<View><Image name="image" value="$image"/>
      <Choices name="c" toName="image"><Choice value="cat"/><Choice value="dog"/></Choices></View>"""
    with pytest.raises(ConfigError, match=r"no <Text>.*Image"):
        parse_label_config(xml)


def test_no_control():
    with pytest.raises(ConfigError, match="no <Choices> or <Labels>"):
        parse_label_config('<View><Text name="t" value="$t"/></View>')


@pytest.mark.parametrize("xml, match", [
    pytest.param("""<View><Text name="t" value="$t"/><Image name="img" value="$img"/>
      <Choices name="c" toName="img"><Choice value="a"/><Choice value="b"/></Choices></View>""",
                 "bound to a <Text>", id="control_not_bound_to_a_text"),
    pytest.param("""<View><Text name="a" value="$a"/><Text name="b" value="$b"/>
      <Choices name="c" toName="nowhere"><Choice value="x"/><Choice value="y"/></Choices></View>""",
                 "several text fields", id="several_text_fields_without_a_bound_control"),
    pytest.param("""<View><Text name="a" value="$a"/><Text name="b" value="$b"/>
      <Choices name="c" toName="a,b"><Choice value="x"/><Choice value="y"/></Choices></View>""",
                 "one clear target", id="control_targeting_several_text_fields"),
])
def test_control_without_one_text_target_is_refused(xml, match):
    with pytest.raises(ConfigError, match=match):
        parse_label_config(xml)


def test_several_controls():
    xml = """<View><Text name="t" value="$t"/>
      <Choices name="c1" toName="t"><Choice value="x"/><Choice value="y"/></Choices>
      <Labels name="l1" toName="t"><Label value="PER"/></Labels></View>"""
    with pytest.raises(ConfigError, match=r"several controls.*c1.*l1"):
        parse_label_config(xml)


@pytest.mark.parametrize("choices", ["", '<Choice value="only"/>'])
def test_fewer_than_two_choices(choices):
    xml = f'<View><Text name="t" value="$t"/><Choices name="c" toName="t">{choices}</Choices></View>'
    with pytest.raises(ConfigError, match="at least 2"):
        parse_label_config(xml)


def test_labels_need_at_least_one():
    xml = '<View><Text name="t" value="$t"/><Labels name="l" toName="t"></Labels></View>'
    with pytest.raises(ConfigError, match="at least 1"):
        parse_label_config(xml)


def test_single_ner_label_is_enough():
    xml = '<View><Text name="t" value="$t"/><Labels name="l" toName="t"><Label value="X"/></Labels></View>'
    assert parse_label_config(xml).labels == ("X",)


@pytest.mark.parametrize("value", ["text", "$", "", "{{text}}"])
def test_text_value_must_start_with_dollar(value):
    xml = f"""<View><Text name="t" value="{value}"/>
      <Choices name="c" toName="t"><Choice value="x"/><Choice value="y"/></Choices></View>"""
    with pytest.raises(ConfigError, match=r"\$field"):
        parse_label_config(xml)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)
