"""The student page's own words, per language ([class] language, `class up --lang`). The
exercise's text, hints and check titles come from its translation (exercise_files.translate);
what swarmlab's engine reports (a reset's steps, a check's expected and found values) stays in
English."""

from __future__ import annotations

from swarmlab.classroom import room as classroom
from swarmlab.config import Config

TEXT = {
    "en": {
        "lab": "lab", "check": "Check", "hint": "Hint", "waiting": "Waiting for the first exercise",
        "ready": "Your nodes are ready: try <code>docker node ls</code> in a terminal.",
        "restart": "Restart this exercise", "reset": "Reset my lab",
        "confirm_restart": "Restart {title}? Your lab goes back to the exercise's start; what you did in it is lost.",
        "confirm_reset": "Reset your lab? It goes back to a fresh swarm; what you did in it is lost.",
        "checking": "checking…", "pass": "✓ all checks pass", "fail": "✗ not yet", "expected": "expected",
        "found": "found", "left": "left", "ends": "ends", "ended": "the class ended at", "h": "h", "min": "min",
        "s": "s", "done": "✓ done: reload the page for the exercise's text",
        "watching": "your instructor is watching your terminal", "typing": "your instructor is typing in your terminal",
        "down": "is down", "ask_reset": "ask your instructor to reset your lab, or reset it yourself",
        "reconnected": "[reconnected]", "press_enter": "[disconnected: press Enter for a new session]",
        "reconnecting": "[connection lost: reconnecting in {s} s]",
        # the printed cards (`class cards --html`)
        "card_lab": "Your lab:", "card_browser": "In a browser:",
        "card_fingerprint": "Its certificate's SHA-256 fingerprint, as your browser should show it:",
        "card_folder": "With the folder you were given,", "card_user": "You are", "card_docker": "on your nodes "
        "and may run <code>docker</code>. You come in through", "card_own": "which lets you reach your own nodes only.",
    },
    "ru": {
        "lab": "лаборатория", "check": "Проверить", "hint": "Подсказка", "waiting": "Ждём первое упражнение",
        "ready": "Ваши узлы готовы: попробуйте <code>docker node ls</code> в терминале.",
        "restart": "Начать упражнение заново", "reset": "Сбросить мою лабораторию",
        "confirm_restart": "Начать «{title}» заново? Лаборатория вернётся к началу упражнения; всё, что вы в ней "
                           "сделали, пропадёт.",
        "confirm_reset": "Сбросить лабораторию? Она вернётся к чистому swarm; всё, что вы в ней сделали, пропадёт.",
        "checking": "проверяем…", "pass": "✓ все проверки пройдены", "fail": "✗ пока нет", "expected": "ожидалось",
        "found": "найдено", "left": "осталось", "ends": "конец в", "ended": "занятие закончилось в", "h": "ч",
        "min": "мин", "s": "с", "done": "✓ готово: перезагрузите страницу, чтобы увидеть текст упражнения",
        "watching": "преподаватель смотрит ваш терминал", "typing": "преподаватель печатает в вашем терминале",
        "down": "не работает", "ask_reset": "попросите преподавателя сбросить лабораторию или сбросьте её сами",
        "reconnected": "[подключено снова]", "press_enter": "[отключено: нажмите Enter для нового сеанса]",
        "reconnecting": "[связь потеряна: переподключение через {s} с]",
        "card_lab": "Ваша лаборатория:", "card_browser": "В браузере:",
        "card_fingerprint": "SHA-256 отпечаток её сертификата, как его должен показать браузер:",
        "card_folder": "С выданной вам папкой", "card_user": "На своих узлах вы —", "card_docker": "и можете "
        "запускать <code>docker</code>. Вы входите через", "card_own": "он пускает только на ваши узлы.",
    },
}


def class_language(config: Config) -> str:
    """`class up --lang`, else [class] language."""
    room = classroom.load(config)
    return (room.language if room else "") or config.class_language


def page_text(language: str) -> dict[str, str]:
    return TEXT.get(language, TEXT["en"])
