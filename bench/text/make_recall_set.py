#!/usr/bin/env python3
"""Writes bench/text/recall_set.json: a small conversational-memory recall set.

24 people, each with 11 to 14 short memories about their preferences, habits and upcoming
events (one per topic, the value picked at random), and 100 questions that paraphrase one
memory each: they name the person, as an agent asking about a user would, and describe the
topic either in other words ("What does Alice like to drink?" for "Alice takes oat milk in her
coffee") or, one time in three per topic, with a word the memory may share ("How does Alice
take her coffee or tea?"). Each memory and question also names its person as `user`, so the set
can be searched tenant-wide (the name is then what tells people apart) or scoped to the user
(`user_tokens`, as an agent serving that user would, where only the topic words count). The
one memory a question paraphrases is its relevant id. `off_topic` holds 30 questions that no
memory answers, for measuring whether a score threshold tells them apart. Deterministic (seeded), so the committed
file is what this script prints; standard library only.

    python3 bench/text/make_recall_set.py > bench/text/recall_set.json
"""

import json
import random

PEOPLE = (
    "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Nina Olivia Peggy Rupert "
    "Sybil Trent Uma Victor Wendy Xavier Yara Zane Quinn"
).split()

# topic: (memories, one per value, with {p} for the person; questions paraphrasing the topic)
TOPICS = {
    "drink": (
        ["{p} takes oat milk in her coffee", "{p} only drinks green tea, never coffee",
         "{p} orders a chai latte every morning", "{p} likes sparkling water with lemon",
         "{p} has her espresso black without sugar", "{p} enjoys a cup of hot chocolate at night"],
        ["What does {p} like to drink?", "Which beverage should I get for {p}?", "How does {p} take her coffee or tea?"],
    ),
    "allergy": (
        ["{p} is allergic to peanuts", "{p} gets hives from shellfish",
         "{p} sneezes constantly around cats", "{p} reacts badly to penicillin",
         "{p} suffers from hay fever every spring"],
        ["Does {p} have any allergies or intolerances?", "What could make {p} sick?", "What is {p} allergic to?"],
    ),
    "pet": (
        ["{p} has a golden retriever named Max", "{p} adopted two tabby kittens last year",
         "{p} keeps a parrot that can whistle tunes", "{p} owns a rabbit called Clover",
         "{p} looks after an aquarium full of goldfish"],
        ["What animal lives with {p}?", "Does {p} have a companion animal at home?", "Does {p} have a dog, a cat or another pet?"],
    ),
    "hobby": (
        ["{p} plays the violin on weekends", "{p} goes rock climbing every Saturday",
         "{p} paints watercolour landscapes", "{p} knits scarves for the whole family",
         "{p} is training for a marathon", "{p} bakes sourdough bread at home"],
        ["How does {p} spend free time?", "What is {p}'s favourite pastime?", "What does {p} do on weekends?"],
    ),
    "job": (
        ["{p} works as a nurse at the city hospital", "{p} is a software engineer at a startup",
         "{p} teaches mathematics at a secondary school", "{p} is an accountant for a bank",
         "{p} cooks as head chef in an Italian restaurant", "{p} drives a delivery van for a living"],
        ["What is {p}'s occupation?", "Where is {p} employed and doing what?", "What does {p} work as?"],
    ),
    "city": (
        ["{p} lives in Lisbon near the river", "{p} moved to Berlin three years ago",
         "{p} has an apartment in Toronto", "{p} grew up and still lives in Melbourne",
         "{p} rents a flat in central Madrid", "{p} recently settled in Nairobi"],
        ["Where is {p} based?", "Which town does {p} call home?", "Which city does {p} live in?"],
    ),
    "trip": (
        ["{p} is flying to Tokyo next month for a conference",
         "{p} booked a ski holiday in the Alps for February",
         "{p} will visit her parents in Chicago over Easter",
         "{p} plans a hiking week in Patagonia this autumn",
         "{p} leaves for a beach vacation in Bali on Friday"],
        ["Where is {p} travelling soon?", "Does {p} have a journey coming up?", "Where is {p} going on holiday or vacation?"],
    ),
    "birthday": (
        ["{p}'s birthday is on the third of March", "{p} turns forty on the twelfth of July",
         "{p} was born on New Year's Eve", "{p} celebrates her birthday on the fifth of October",
         "{p}'s birthday falls on Valentine's Day"],
        ["When was {p} born?", "On what date should we throw {p} a party for getting older?", "When is {p}'s birthday?"],
    ),
    "diet": (
        ["{p} is vegetarian and never eats meat", "{p} follows a strict gluten-free diet",
         "{p} went vegan last January", "{p} avoids dairy products completely",
         "{p} is doing keto and skips bread and pasta"],
        ["What kind of meals does {p} eat?", "Are there food restrictions to respect for {p}?", "Is {p} on a special diet?"],
    ),
    "music": (
        ["{p} loves listening to old jazz records", "{p} has tickets for every heavy metal concert",
         "{p} plays classical piano pieces to relax", "{p} is a huge fan of k-pop bands",
         "{p} listens to country songs on long drives"],
        ["What tunes does {p} enjoy?", "Which genre would {p} want on the playlist?", "What music does {p} listen to?"],
    ),
    "family": (
        ["{p} has two younger sisters", "{p}'s brother got married in June",
         "{p} recently became a grandmother", "{p} is expecting her first baby in spring",
         "{p} looks after her elderly father"],
        ["Tell me about {p}'s relatives.", "Who is in {p}'s household and kin?", "What is new in {p}'s family?"],
    ),
    "schedule": (
        ["{p} prefers meetings in the morning before ten", "{p} is unavailable on Fridays",
         "{p} works night shifts and sleeps until noon", "{p} never takes calls after six pm",
         "{p} blocks Wednesday afternoons for deep work"],
        ["When is a good time to reach {p}?", "When can I book an appointment with {p}?", "When does {p} take meetings or calls?"],
    ),
    "commute": (
        ["{p} drives an old red Volvo", "{p} cycles to work every day",
         "{p} takes the train to the office", "{p} rides a motorbike through the city",
         "{p} walks twenty minutes to her job"],
        ["How does {p} get to work?", "What transport does {p} use daily?", "Does {p} drive, cycle or take the train?"],
    ),
    "team": (
        ["{p} supports Liverpool football club", "{p} never misses a Lakers basketball game",
         "{p} cheers for the New Zealand rugby side", "{p} follows the Yankees baseball season",
         "{p} is a season ticket holder at Ajax"],
        ["Which side does {p} root for?", "What sports club is {p} a fan of?", "Which team does {p} support?"],
    ),
}

QUESTIONS = 100

# Questions no memory answers: other domains (a few share a word with a memory, as "football"),
# asked as a user would ask anything. A search for one should score below the real questions.
OFF_TOPIC = [
    "quantum chromodynamics lattice gauge theory",
    "What is the capital of Australia?",
    "How do I reset the router's admin password?",
    "Explain the difference between mitosis and meiosis",
    "What is the boiling point of nitrogen in kelvin?",
    "Who wrote the novel War and Peace?",
    "How many moons does Jupiter have?",
    "What is the time complexity of heapsort?",
    "How do you change a flat tyre on a bicycle?",
    "What caused the fall of the Roman Empire?",
    "Which programming language has a borrow checker?",
    "How is the interest on a fixed-rate mortgage calculated?",
    "What is the tallest mountain in South America?",
    "How do vaccines train the immune system?",
    "What are the rules of offside in football?",
    "How does a lithium-ion battery store energy?",
    "What is the plot of Hamlet?",
    "How do I configure TLS certificates for nginx?",
    "What is the speed of sound in water?",
    "Who painted the ceiling of the Sistine Chapel?",
    "How do tectonic plates cause earthquakes?",
    "What does the Federal Reserve do with interest rates?",
    "How do I compile a kernel module on Linux?",
    "What is photosynthesis in plants?",
    "When was the printing press invented?",
    "How do black holes evaporate through Hawking radiation?",
    "What is the GDP of Brazil?",
    "How does public key cryptography work?",
    "Which chess opening starts with the king's pawn and the bishop?",
    "What is the half-life of carbon-14?",
]


def main():
    rng = random.Random(9)
    memories, by_topic = [], {}
    for person in PEOPLE:
        topics = sorted(TOPICS)
        rng.shuffle(topics)
        for topic in sorted(topics[: rng.randint(11, 14)]):
            template = rng.choice(TOPICS[topic][0])
            mid = f"m{len(memories):03d}"
            memories.append({"id": mid, "user": person.lower(), "content": template.format(p=person)})
            by_topic[(person, topic)] = mid
    pairs = sorted(by_topic)
    rng.shuffle(pairs)
    questions = []
    for person, topic in pairs[:QUESTIONS]:
        q = rng.choice(TOPICS[topic][1]).format(p=person)
        questions.append({"question": q, "user": person.lower(),
                          "relevant": [by_topic[(person, topic)]]})
    json.dump(
        {
            "about": "Generated by bench/text/make_recall_set.py (seeded); see its docstring.",
            "memories": memories,
            "questions": questions,
            "off_topic": OFF_TOPIC,
        },
        __import__("sys").stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main()
