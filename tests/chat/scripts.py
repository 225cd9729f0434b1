"""Scripted visitors the chat, consent and gateway tests send through chat."""

POLISH_HIGH_SCORE = [
    "Dzień dobry, ile kosztuje wykończenie mieszkania?",
    "Jan Kowalski, jan.kowalski@example.com, 600 700 800, Warszawa, 85 m2",
    "Budżet 250 tys. zł",
    "Chcemy zacząć od zaraz",
]

ENGLISH_LOW_SCORE = [
    "Hello, how long does a renovation take?",
    "My name is John Smith",
    "john.smith@example.org",
    "+48 601 234 567",
    "The flat is 35 sqm in Gdansk",
    "budget 60k PLN",
    "we could start in 8 months",
]


def as_person(script: list[str], email: str, phone: str = "600 700 800") -> list[str]:
    """The same visitor with another email and phone: a different person, not a returning one."""
    return [line.replace("jan.kowalski@example.com", email).replace("600 700 800", phone) for line in script]
