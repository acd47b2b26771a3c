"""Exercises in more than one language: the shipped Russian translations, `exercise show
--lang`, the student page and the cards in the class's language."""

import re

import pytest

from swarmlab.classroom import access, room as classroom
from swarmlab.core.checks import Verdict
from swarmlab.teach import exercise_files, exercises
from swarmlab.teach.exercise_files import ExerciseFileError
from tests.conftest import swarmlab
from tests.test_access import a_class  # noqa: F401

CYRILLIC = re.compile("[а-яА-ЯёЁ]")


@pytest.mark.parametrize("exercise", exercise_files.load_all(), ids=lambda e: e.id)
def test_every_exercise_ships_in_russian_whole(exercise):
    ru = exercise_files.translate(exercise, "ru")
    assert ru.language == "ru" and ru.id == exercise.id and ru.checks == exercise.checks
    assert CYRILLIC.search(ru.title) and CYRILLIC.search(ru.goal) and CYRILLIC.search(ru.text)
    assert len(ru.hints) == len(exercise.hints) and len(ru.check_titles) == len(exercise.checks)
    ctx = exercise_files.context(ru, None)
    assert exercise_files.render(ru.text, ctx, "README.ru.md")  # the same placeholders render
    for hint in ru.hints:
        exercise_files.render(hint, ctx, "hint")
    # the commands in the text are the English text's own (only the words around them change)
    assert set(re.findall(r"`([^`]+)`", ru.text)) <= set(re.findall(r"`([^`]+)`", exercise.text)) | \
        {"http://<любой узел>:9000/"}


def test_a_translation_that_misses_a_hint_names_its_file(tmp_path):
    import shutil
    shutil.copytree(exercise_files.labs_dir() / "services", tmp_path / "services")
    (tmp_path / "services" / "exercise.ru.yaml").write_text("title: Сервисы\nhints: [одна]\n")
    exercise = exercise_files.find("services", tmp_path)
    with pytest.raises(ExerciseFileError, match=r"exercise.ru.yaml: hints has 1 entries, the exercise 3"):
        exercise_files.translate(exercise, "ru")
    (tmp_path / "services" / "exercise.ru.yaml").write_text("solution: []\n")
    with pytest.raises(ExerciseFileError, match="solution is not translated here"):
        exercise_files.translate(exercise, "ru")
    assert exercise_files.translate(exercise, "de") is exercise  # no such translation: English


def test_exercise_show_in_russian_and_a_language_that_is_not_there():
    shown = swarmlab("exercise", "show", "services", "--lang", "ru")
    assert shown.returncode == 0 and shown.stdout.startswith("# Сервисы"), shown.stdout + shown.stderr
    bad = swarmlab("exercise", "show", "services", "--lang", "xx")
    assert bad.returncode == 2 and bad.stderr.strip() == "swarmlab: --lang xx is not one of en, ru"


def test_the_student_page_and_its_check_speak_the_class_language(a_class, monkeypatch):  # noqa: F811
    from tests.test_portal import run
    config = a_class
    room = classroom.load(config)
    room.language = "ru"
    classroom.save(config, room)
    exercises.save_state(access.lab_config_of(config, "ann"), "ann", {"exercise": "services"})
    monkeypatch.setattr(exercises, "check", lambda *a, **kw: [Verdict(True, "service HelloWorld", "2", "2"),
                                                        Verdict(False, "service HelloGlobal", "1", "0"),
                                                        Verdict(True, "service Leftover", "absent", "absent")])
    ann = access.token(config, "ann")

    async def scenario(client):
        page = await (await client.get(f"/s/{ann}")).text()
        checked = await (await client.post(f"/s/{ann}/check")).json()
        return page, checked

    page, checked = run(config, scenario)
    assert 'lang="ru"' in page and ">Проверить<" in page and "Сервисы" in page and "Начать упражнение заново" in page
    assert [v["check"] for v in checked["verdicts"]] == ["сервис HelloWorld", "сервис HelloGlobal", "сервис Leftover"]


def test_class_up_refuses_a_language_it_does_not_have(tmp_path):
    from tests.conftest import write_config
    path = write_config(tmp_path / "swarmlab.toml", tmp_path / "state")
    proc = swarmlab("class", "up", "--students", "2", "--lang", "fr", config=path)
    assert proc.returncode == 2 and proc.stderr.strip() == "swarmlab: --lang fr is not one of en, ru"
    assert not (tmp_path / "state" / "class.json").exists()

