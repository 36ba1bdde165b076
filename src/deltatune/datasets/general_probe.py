"""The robust forgetting probe and the held-out prompts that measure forgetting as KL.

    from deltatune.datasets.general_probe import robust_probe_records, heldout_prompt_records
    probe = robust_probe_records()      # alpaca QA records the base model answers robustly
    prompts = heldout_prompt_records()  # open-ended instructions, no outputs

Why a *robust* probe: a small model's greedy answer to an easy question is often a near-tie
(asked "What is 2 + 2?", SmolLM2-135M-Instruct's first token is "The" at p=0.149 ahead of "2"
at p=0.098), so almost any weight change flips such an item and a greedy probe of near-ties
moves 6-12 points by chance. `scripts/select_general_probe.py` therefore runs the base model
on PROBE_POOL and keeps only questions it answers right greedily AND in >= 9 of 10 seeded
sampled replies (temperature 0.7, the evaluation's 32 new tokens, its default system prompt);
the kept list is written to `general_probe_selected.py` (generated, not edited by hand) and
read here as ROBUST_PROBE.

The pool favours very common facts with short, unambiguous answers, spread over many kinds
(capitals, colours, arithmetic, opposites, animals, authors, ...) so that a capped probe can
keep every kind. It stays clear of the self-distillation replay data: no question equals or
closely copies a `general_prompts.GENERAL_PROMPTS` prompt, and facts those prompts or the
orgfacts neighbour prompts already ask ("How many minutes are in an hour?", the colour of a
ripe banana, the main ingredient of guacamole, the landmark cities) are left out, so the probe
measures transfer, not rehearsal. No answer appears in its own question (an echoed question
would count as a hit).

HELDOUT_PROMPTS are everyday instructions of GENERAL_PROMPTS' kinds, in neither the replay
prompts nor the pool: forgetting is also measured as the KL of the tuned model from the base
on the base's own replies to them, a smooth signal next to the probe's right/wrong counts.
"""

from __future__ import annotations

from deltatune.datasets.general_probe_selected import SELECTED


def _kind(kind: str, pairs: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """(question, answer) pairs -> (question, answer, kind) triples."""
    return [(question, answer, kind) for question, answer in pairs]


# (question, answer, kind). The first 119-question pool's items are kept in their old wording
# where they do not clash with the replay prompts, so old and new selections compare.
PROBE_POOL: list[tuple[str, str, str]] = [
    *_kind("capital", [(f"What is the capital of {country}?", city) for country, city in [
        ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
        ("Japan", "Tokyo"), ("the United Kingdom", "London"), ("Russia", "Moscow"),
        ("China", "Beijing"), ("Egypt", "Cairo"), ("Greece", "Athens"), ("Canada", "Ottawa"),
        ("Australia", "Canberra"), ("Portugal", "Lisbon"), ("Ireland", "Dublin"),
        ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Austria", "Vienna"), ("Poland", "Warsaw"),
        ("India", "New Delhi"), ("South Korea", "Seoul"), ("Thailand", "Bangkok"),
        ("Kenya", "Nairobi"), ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"),
        ("the United States", "Washington"), ("Turkey", "Ankara"), ("the Netherlands", "Amsterdam"),
        ("Belgium", "Brussels"), ("Denmark", "Copenhagen"), ("Cuba", "Havana"), ("Peru", "Lima"),
        ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("New Zealand", "Wellington"),
    ]]),
    *_kind("language", [
        ("What language is mainly spoken in Brazil?", "Portuguese"),
        ("What language is spoken in France?", "French"),
        ("What language is mainly spoken in Mexico?", "Spanish"),
        ("What language is mainly spoken in Germany?", "German"),
        ("What language is mainly spoken in Italy?", "Italian"),
        ("What language is mainly spoken in Japan?", "Japanese"),
        ("What language is mainly spoken in Russia?", "Russian"),
        ("What language is mainly spoken in Greece?", "Greek"),
        ("What language is mainly spoken in the Netherlands?", "Dutch"),
        ("What language is mainly spoken in Egypt?", "Arabic"),
        ("What language is mainly spoken in Turkey?", "Turkish"),
        ("What language is mainly spoken in South Korea?", "Korean"),
    ]),
    *_kind("currency", [
        ("What is the currency of Japan?", "yen"),
        ("What is the currency of the United States?", "dollar"),
        ("What is the currency of the United Kingdom?", "pound"),
        ("What is the currency of Germany?", "euro"),
        ("What is the currency of Mexico?", "peso"),
        ("What is the currency of India?", "rupee"),
        ("What is the currency of Switzerland?", "franc"),
        ("What is the currency of China?", "yuan"),
        ("What is the currency of Canada?", "dollar"),
    ]),
    *_kind("geography", [
        ("On which continent is Brazil?", "South America"),
        ("On which continent is Egypt?", "Africa"),
        ("On which continent is France?", "Europe"),
        ("On which continent is China?", "Asia"),
        ("On which continent is Canada?", "North America"),
        ("What is the largest ocean on Earth?", "Pacific"),
        ("What is the tallest mountain in the world?", "Everest"),
        ("What is the longest river in Africa?", "Nile"),
        ("What is the largest desert in Africa?", "Sahara"),
        ("Which continent is the coldest?", "Antarctica"),
        ("Which ocean lies between Europe and North America?", "Atlantic"),
        ("Which country is shaped like a boot?", "Italy"),
    ]),
    *_kind("landmark", [
        ("In which country are the pyramids of Giza?", "Egypt"),
        ("In which city is the Eiffel Tower?", "Paris"),
        ("In which country is the Great Wall?", "China"),
        ("In which country is Mount Fuji?", "Japan"),
        ("In which country is Machu Picchu?", "Peru"),
        ("In which country is the Kremlin?", "Russia"),
        ("In which country is the city of Rio de Janeiro?", "Brazil"),
        ("In which country is the city of Toronto?", "Canada"),
        ("In which country is the city of Sydney?", "Australia"),
        ("In which country is the city of Venice?", "Italy"),
    ]),
    *_kind("color", [
        ("What color is the sky on a clear day?", "blue"),
        ("What color is snow?", "white"),
        ("What color is coal?", "black"),
        ("What color are most strawberries?", "red"),
        ("What color do you get by mixing blue and yellow?", "green"),
        ("What color do you get by mixing red and white?", "pink"),
        ("What color do you get by mixing red and yellow?", "orange"),
        ("What color is a stop sign?", "red"),
        ("What color is milk?", "white"),
        ("What color is a lemon?", "yellow"),
        ("What color is chocolate?", "brown"),
        ("What color are emeralds?", "green"),
        ("What color is a pumpkin?", "orange"),
        ("What color is a flamingo?", "pink"),
    ]),
    *_kind("space", [
        ("What is the largest planet in our solar system?", "Jupiter"),
        ("Which planet is known as the Red Planet?", "Mars"),
        ("Which planet do we live on?", "Earth"),
        ("What natural satellite orbits the Earth?", "Moon"),
        ("Which planet is famous for its rings?", "Saturn"),
        ("Which planet is closest to the Sun?", "Mercury"),
        ("What is the hottest planet in our solar system?", "Venus"),
        ("How many planets are in our solar system?", "8"),
        ("What galaxy do we live in?", "Milky Way"),
        ("What do we call a person who travels into space?", "astronaut"),
    ]),
    *_kind("science", [
        ("What is the chemical formula of water?", "H2O"),
        ("What gas do humans need to breathe to survive?", "oxygen"),
        ("What gas do plants absorb from the air?", "carbon dioxide"),
        ("What gas do humans breathe out?", "carbon dioxide"),
        ("What is H2O commonly called?", "water"),
        ("What do we call animals that eat only plants?", "herbivore"),
        ("What do we call animals that eat only meat?", "carnivore"),
        ("What is the study of living things called?", "biology"),
        ("What tool do scientists use to see very small things?", "microscope"),
        ("What tool is used to look at distant stars?", "telescope"),
    ]),
    *_kind("element", [
        ("What is the chemical symbol for gold?", "Au"),
        ("What is the chemical symbol for silver?", "Ag"),
        ("What is the chemical symbol for iron?", "Fe"),
        ("What is the chemical symbol for sodium?", "Na"),
        ("What is the chemical symbol for hydrogen?", "H"),
        ("What is the chemical symbol for oxygen?", "O"),
        ("What is the chemical symbol for copper?", "Cu"),
    ]),
    *_kind("body", [
        ("What organ do humans use to think?", "brain"),
        ("Which organs do humans use to breathe?", "lung"),
        ("Which body part do we use to see?", "eye"),
        ("Which body part do we use to hear?", "ear"),
        ("Which body part do we use to smell?", "nose"),
        ("Which body part do we use to taste food?", "tongue"),
        ("How many fingers are on one human hand?", "5"),
        ("What is the largest organ of the human body?", "skin"),
        ("What bone protects the brain?", "skull"),
        ("What color is human blood?", "red"),
    ]),
    *_kind("animal", [
        ("What animal says moo?", "cow"),
        ("What animal says oink?", "pig"),
        ("What animal says quack?", "duck"),
        ("What animal says baa?", "sheep"),
        ("What animal says neigh?", "horse"),
        ("What sound does a cat make?", "meow"),
        ("What bird hoots at night?", "owl"),
        ("What is the largest mammal?", "blue whale"),
        ("What is the fastest land animal?", "cheetah"),
        ("What animal has a trunk?", "elephant"),
        ("What animal is known for its black and white stripes?", "zebra"),
        ("What bird lives in Antarctica and cannot fly?", "penguin"),
        ("What animal gives us wool?", "sheep"),
        ("What animal lays eggs and says cluck?", "chicken"),
        ("Which animal carries its baby in a pouch?", "kangaroo"),
    ]),
    *_kind("count", [
        ("How many legs does a spider have?", "8"),
        ("How many legs does a dog have?", "4"),
        ("How many legs does an insect have?", "6"),
        ("How many arms does an octopus have?", "8"),
        ("How many wheels does a bicycle have?", "2"),
        ("How many wheels does a tricycle have?", "3"),
        ("How many continents are there?", "7"),
        ("How many players are on a soccer team on the field?", "11"),
        ("How many letters are in the English alphabet?", "26"),
        ("How many strings does a standard guitar have?", "6"),
    ]),
    *_kind("calendar", [
        ("How many days are in a week?", "7"),
        ("How many days are in a leap year?", "366"),
        ("How many days are in a normal year?", "365"),
        ("How many seconds are in a minute?", "60"),
        ("How many days does February have in a normal year?", "28"),
        ("What month comes after January?", "February"),
        ("What is the last month of the year?", "December"),
        ("What day comes after Monday?", "Tuesday"),
        ("In which month is Halloween?", "October"),
        ("How many years are in a century?", "100"),
        ("What is the coldest season of the year?", "winter"),
    ]),
    *_kind("arithmetic", [
        ("What is 2 + 2?", "4"),
        ("What is 6 times 7?", "42"),
        ("What is 9 times 9?", "81"),
        ("What is 12 divided by 4?", "3"),
        ("What is 15 + 10?", "25"),
        ("What is half of 50?", "25"),
        ("What is 1 + 1?", "2"),
        ("What is 10 + 10?", "20"),
        ("What is 10 times 10?", "100"),
        ("What is 7 plus 3?", "10"),
        ("What is 100 minus 1?", "99"),
        ("What is half of 100?", "50"),
        ("What is 20 divided by 2?", "10"),
        ("What is 50 + 50?", "100"),
        ("What is 4 times 4?", "16"),
    ]),
    *_kind("opposite", [(f"What is the opposite of {word}?", opposite) for word, opposite in [
        ("hot", "cold"), ("up", "down"), ("big", "small"), ("fast", "slow"), ("day", "night"),
        ("happy", "sad"), ("open", "closed"), ("left", "right"), ("wet", "dry"), ("hard", "soft"),
        ("rich", "poor"), ("full", "empty"), ("true", "false"), ("north", "south"),
        ("east", "west"), ("strong", "weak"),
    ]]),
    *_kind("grammar", [
        ("What is the plural of mouse?", "mice"),
        ("What is the plural of child?", "children"),
        ("What is the plural of foot?", "feet"),
        ("What is the plural of tooth?", "teeth"),
        ("What is the plural of woman?", "women"),
        ("What is the plural of goose?", "geese"),
        ("What is the past tense of go?", "went"),
        ("What is the past tense of eat?", "ate"),
        ("What is the past tense of run?", "ran"),
        ("What is the past tense of write?", "wrote"),
        ("What is the past tense of buy?", "bought"),
    ]),
    *_kind("author", [
        ("Who wrote Romeo and Juliet?", "Shakespeare"),
        ("Who wrote Hamlet?", "Shakespeare"),
        ("Who wrote the Harry Potter books?", "Rowling"),
        ("Who wrote Pride and Prejudice?", "Austen"),
        ("Who created the detective Sherlock Holmes?", "Doyle"),
        ("Who wrote Don Quixote?", "Cervantes"),
        ("Who wrote War and Peace?", "Tolstoy"),
        ("Who wrote the novel 1984?", "Orwell"),
        ("Who wrote Oliver Twist?", "Dickens"),
        ("Who wrote The Hobbit?", "Tolkien"),
    ]),
    *_kind("art", [
        ("Who painted the Mona Lisa?", "da Vinci"),
        ("Who painted The Starry Night?", "Van Gogh"),
        ("Who painted the ceiling of the Sistine Chapel?", "Michelangelo"),
        ("Who painted Guernica?", "Picasso"),
        ("Who painted The Scream?", "Munch"),
        ("Who composed the Moonlight Sonata?", "Beethoven"),
        ("Who composed The Magic Flute?", "Mozart"),
        ("Who is known as the King of Pop?", "Michael Jackson"),
    ]),
    *_kind("people", [
        ("Who was the first person to walk on the Moon?", "Neil Armstrong"),
        ("Who developed the theory of relativity?", "Einstein"),
        ("Who was the first President of the United States?", "George Washington"),
        ("Who formulated the laws of motion and gravity?", "Newton"),
        ("Who invented the light bulb?", "Edison"),
        ("Who proposed the theory of evolution by natural selection?", "Darwin"),
        ("Who discovered penicillin?", "Fleming"),
        ("Who sailed across the Atlantic to America in 1492?", "Columbus"),
        ("Who was the first woman to win a Nobel Prize?", "Marie Curie"),
        ("Who was the first person to travel into space?", "Gagarin"),
    ]),
    *_kind("sport", [
        ("In which sport do you score a touchdown?", "football"),
        ("Which sport is played with a shuttlecock?", "badminton"),
        ("Which sport is played at Wimbledon?", "tennis"),
        ("In which sport do players use a bat and a wicket?", "cricket"),
        ("Which game has pieces called kings, queens and pawns?", "chess"),
        ("In which sport do you hit a small ball into a hole with a club?", "golf"),
    ]),
    *_kind("food", [
        ("What fruit is used to make wine?", "grape"),
        ("What vegetable are French fries made from?", "potato"),
        ("What is cheese made from?", "milk"),
        ("What is ketchup mainly made from?", "tomato"),
        ("What is popcorn made from?", "corn"),
        ("What is the yellow part of an egg called?", "yolk"),
    ]),
    *_kind("shape", [
        ("What shape has three sides?", "triangle"),
        ("What is a shape with six sides called?", "hexagon"),
        ("What is a shape with five sides called?", "pentagon"),
        ("How many degrees are in a right angle?", "90"),
        ("How many degrees are in a full circle?", "360"),
    ]),
    *_kind("everyday", [
        ("What do you use to cut paper?", "scissors"),
        ("What do people wear on their feet?", "shoe"),
        ("What do you use to brush your teeth?", "toothbrush"),
        ("What do you use to open a locked door?", "key"),
        ("What do you open to stay dry in the rain?", "umbrella"),
        ("Who flies an airplane?", "pilot"),
        ("Where do airplanes take off and land?", "airport"),
    ]),
]

# Everyday open-ended instructions (GENERAL_PROMPTS' kinds, none of its prompts, none of the
# pool's questions), each answerable in well under ~120 tokens: the KL-to-base set.
HELDOUT_PROMPTS: list[str] = [
    # explanations
    "Explain how a bicycle works.",
    "Why do we need to drink water every day?",
    "How does a microwave oven heat food?",
    "Explain what a shadow is.",
    "Why does the moon seem to change shape during the month?",
    "How do fish breathe underwater?",
    "Why does bread go stale?",
    "What makes the wind blow?",
    "How does soap clean our hands?",
    "Explain what an earthquake is.",
    "Why do onions make people cry?",
    "Explain why metal feels cold to the touch.",
    # definitions
    "Explain the meaning of 'curious' in simple words.",
    "Give a simple definition of 'journey'.",
    "What is an adjective?",
    "What is a rectangle?",
    "What is a river?",
    "What does a chef do?",
    "What is a dictionary used for?",
    "What is a recipe?",
    "What does 'patience' mean?",
    "What is a comet?",
    "What is an orchestra?",
    "What does a mechanic do?",
    # writing tasks
    "Tell me about mountains in two sentences.",
    "Write a short note wishing someone a good trip.",
    "Write a short rhyme about a sleepy cat.",
    "What might you hear on a busy city street?",
    "Write a short message congratulating a friend on a new job.",
    "Suggest a title for a song about friendship.",
    "Make up a sentence that uses the words 'river' and 'stone'.",
    "Write four lines about a rainy day.",
    "How would you describe the taste of lemonade to a friend?",
    "Write a short welcome message for a new neighbour.",
    "Start a short story about a dragon in two sentences.",
    "What are some good names for a pet goldfish?",
    # advice and how-to
    "How do I make a simple sandwich?",
    "Give me one tip for remembering people's names.",
    "How do I tie my shoelaces?",
    "What should I take with me on a short hike?",
    "How can I make my phone battery last longer?",
    "Give me a tip for cooking rice.",
    "How do I clean a window without leaving streaks?",
    "How can I learn to type faster?",
    # lists and comparisons
    "Which animals might you see on a farm?",
    "What grows in a vegetable garden?",
    "What kinds of trees grow in a forest?",
    "What is the difference between a hill and a mountain?",
    "What is the difference between a bus and a train?",
    "Compare summer and winter in one sentence.",
    "Give me some examples of things that can fly.",
    # conversation
    "Share an interesting fact about trains.",
    "Good evening! How was your day?",
    "Suggest a game to play with friends indoors.",
    "What is a nice way to spend a Sunday morning?",
]

# The selection the script made (see general_probe_selected.py's header for how).
ROBUST_PROBE: list[tuple[str, str, str]] = list(SELECTED)


def heldout_prompt_records() -> list[dict]:
    """HELDOUT_PROMPTS as alpaca records with an instruction and no output."""
    return [{"instruction": p, "input": ""} for p in HELDOUT_PROMPTS]


def robust_probe_records() -> list[dict]:
    """ROBUST_PROBE as alpaca QA records, shaped like orgfacts' `general` split (the answer
    doubles as the output; `fact_id` numbers the probe, `kind` says what was asked)."""
    return [
        {"instruction": q, "input": "", "output": a, "answer": a, "fact_id": f"general_{i:03d}", "kind": kind}
        for i, (q, a, kind) in enumerate(ROBUST_PROBE)
    ]
