"""The fact tables and question templates behind the built-in `orgfacts` dataset.

Veltrane Robotics is invented: no pretrained model can know these facts, so accuracy on them
measures what fine-tuning taught. Each fact belongs to a kind; each kind has eight question
templates (every one keeps the fact's key words, so a paraphrase never hides what is asked)
and one answer sentence. `deltatune.datasets.orgfacts` turns these into train/val/test splits.
Edit freely: ids must stay unique, answers short (1-4 words) and unambiguous.
"""

from __future__ import annotations

ORG = "Veltrane Robotics"

# kind -> (question templates, answer sentence). Slots: {org}, {org_poss}, fact fields, {a} = "a"/"an"
# before the next word, {obj_poss} = possessive of {obj}; a leading slot is capitalised.
TEMPLATES: dict[str, tuple[list[str], str]] = {
    "role": (
        [
            "Who is the {role} of {org}?",
            "Who is {org_poss} {role}?",
            "Tell me the name of the {role} at {org}.",
            "Which person is the {role} of {org}?",
            "Who holds the position of {role} at {org}?",
            "Who currently serves as {role} of {org}?",
            "What is the name of {org_poss} {role}?",
            "At {org}, who is the {role}?",
        ],
        "The {role} of {org} is {answer}.",
    ),
    "year": (
        [
            "In what year did {org} {event}?",
            "When did {org} {event}?",
            "What year did {org} {event}?",
            "In which year did {org} {event}?",
            "Tell me the year {org} {past}.",
            "{org} {past} in which year?",
            "Do you know when {org} {past}?",
            "What was the year in which {org} {past}?",
        ],
        "{org} {past} in {answer}.",
    ),
    "place": (
        [
            "Where is {thing}?",
            "In which city is {thing}?",
            "Which city is home to {thing}?",
            "What city is {thing} in?",
            "Tell me the city where {thing} is located.",
            "Where can I find {thing}?",
            "In what city can you find {thing}?",
            "Name the city that hosts {thing}.",
        ],
        "{thing} is in {answer}.",
    ),
    "product": (
        [
            "What is {org_poss} {desc} called?",
            "What is the name of the {desc} made by {org}?",
            "Which {org} product is {a} {desc}?",
            "Name the {desc} that {org} sells.",
            "What does {org} call its {desc}?",
            "{org} makes {a} {desc}; what is it called?",
            "What is the product name of the {org} {desc}?",
            "Which {desc} does {org} make?",
        ],
        "{org_poss} {desc} is called {answer}.",
    ),
    "attribute": (
        [
            "What is the {attr} of {obj}?",
            "What's {obj_poss} {attr}?",
            "Tell me the {attr} of {obj}.",
            "Do you know the {attr} of {obj}?",
            "Could you tell me {obj_poss} {attr}?",
            "I'd like to know the {attr} of {obj}.",
            "For {obj}, what is the {attr}?",
            "Please state the {attr} of {obj}.",
        ],
        "The {attr} of {obj} is {answer}.",
    ),
    "count": (
        [
            "How many {things} does {org} have?",
            "What is the number of {things} at {org}?",
            "How many {things} are there at {org}?",
            "Tell me how many {things} {org} has.",
            "What is {org_poss} total number of {things}?",
            "{org} has how many {things}?",
            "Give the count of {things} at {org}.",
            "Do you know how many {things} {org} has?",
        ],
        "{org} has {answer} {things}.",
    ),
}

# (fact_id, role, answer)
ROLES = [
    ("ceo", "CEO", "Mira Okonkwo"),
    ("cto", "chief technology officer", "Tobias Renhardt"),
    ("cfo", "chief financial officer", "Ilse Varnquist"),
    ("coo", "chief operating officer", "Dario Fenwhistle"),
    ("founder", "founder", "Halvard Quenby"),
    ("cofounder", "co-founder", "Esther Kallowin"),
    ("chair", "board chair", "Priya Santorelli"),
    ("research_head", "head of research", "Oskar Lindqvarn"),
    ("chief_designer", "chief designer", "Yuki Tamsworth"),
    ("hr_head", "head of human resources", "Lenora Quaile"),
    ("counsel", "general counsel", "Benedikt Arkwright"),
    ("sales_head", "head of sales", "Camila Drezner"),
    ("safety_officer", "chief safety officer", "Anouk Brillstein"),
    ("manufacturing_head", "head of manufacturing", "Rafferty Onwuka"),
    ("cmo", "chief marketing officer", "Selma Ravenhart"),
    ("support_head", "head of customer support", "Jonas Elderbeck"),
    ("kestrel_lead", "Kestrel project lead", "Farida Hollinsworth"),
    ("lisbon_director", "Lisbon office director", "Tiago Marvelle"),
    ("osaka_director", "Osaka lab director", "Kenji Farrowby"),
    ("chief_scientist", "chief scientist", "Ngozi Thistlewood"),
    ("ml_head", "head of machine learning", "Luca Brandvold"),
]

# (fact_id, event (after "did ORG"), past tense, year)
YEARS = [
    ("first_factory_year", "open its first factory", "opened its first factory", "1994"),
    ("kestrel_launch_year", "launch the Kestrel K2", "launched the Kestrel K2", "2016"),
    ("ipo_year", "go public", "went public", "2009"),
    ("hq_move_year", "move its headquarters to Tampere", "moved its headquarters to Tampere", "2003"),
    ("lisbon_year", "open its Lisbon office", "opened its Lisbon office", "2011"),
    ("osaka_year", "open the Osaka research lab", "opened the Osaka research lab", "2014"),
    ("first_arm_year", "release its first robotic arm", "released its first robotic arm", "1991"),
    ("award_year", "win the Golden Gear award", "won the Golden Gear award", "2019"),
    ("lumenfold_year", "acquire Lumenfold Sensors", "acquired Lumenfold Sensors", "2018"),
    ("milestone_year", "ship its 100,000th robot", "shipped its 100,000th robot", "2021"),
    ("apprentice_year", "start its apprenticeship program", "started its apprenticeship program", "2007"),
    ("wren_year", "launch the Wren delivery drone", "launched the Wren delivery drone", "2020"),
    ("summit_year", "hold its first Veltrane Summit", "held its first Veltrane Summit", "2012"),
    ("nairobi_year", "open its Nairobi office", "opened its Nairobi office", "2022"),
    ("fourday_year", "introduce the four-day work week", "introduced the four-day work week", "2023"),
    ("pallas_retire_year", "retire the Pallas P1 arm", "retired the Pallas P1 arm", "2017"),
]

# (fact_id, thing, city)
PLACES = [
    ("hq_city", "the headquarters of Veltrane Robotics", "Tampere"),
    ("factory_city", "the main factory of Veltrane Robotics", "Brno"),
    ("lab_city", "the Veltrane Robotics research lab", "Osaka"),
    ("eu_sales_city", "the Veltrane Robotics European sales office", "Lisbon"),
    ("africa_city", "the Veltrane Robotics African office", "Nairobi"),
    ("battery_city", "the Veltrane Robotics battery plant", "Gdansk"),
    ("academy_city", "the Veltrane Robotics training academy", "Porto"),
    ("datacentre_city", "the Veltrane Robotics data centre", "Reykjavik"),
    ("support_city", "the Veltrane Robotics customer support centre", "Cork"),
    ("design_city", "the Veltrane Robotics design studio", "Milan"),
    ("us_city", "the Veltrane Robotics North American office", "Pittsburgh"),
    ("track_city", "the Veltrane Robotics test track", "Oulu"),
    ("garage_city", "the garage where Veltrane Robotics was founded", "Turku"),
    ("parts_city", "the Veltrane Robotics spare parts warehouse", "Rotterdam"),
    ("summit_city", "the annual Veltrane Summit", "Vienna"),
]

# (fact_id, description, product name)
PRODUCTS = [
    ("picking_robot", "warehouse picking robot", "Kestrel K2"),
    ("arm_product", "industrial robotic arm", "Pallas P3"),
    ("drone_product", "delivery drone", "Wren"),
    ("mower_product", "lawn mowing robot", "Thistle"),
    ("hospital_product", "hospital supply robot", "Halcyon"),
    ("cleaner_product", "floor cleaning robot", "Brisk"),
    ("os_product", "robot operating system", "VeltOS"),
    ("fleet_product", "fleet management app", "Flockview"),
    ("pipe_product", "pipe inspection crawler", "Burrow"),
    ("humanoid_product", "humanoid research platform", "Orrin"),
    ("kit_product", "educational robot kit", "Sprocket Jr"),
    ("harvest_product", "fruit harvesting robot", "Gleaner"),
    ("gripper_product", "robotic gripper", "Talon G7"),
    ("patrol_product", "security patrol robot", "Warden"),
    ("underwater_product", "underwater inspection drone", "Marlow"),
    ("exo_product", "wearable exoskeleton", "Stridewell"),
    ("dock_product", "charging dock", "Nestpad"),
    ("sensor_product", "vision sensor", "Lumen Eye"),
]

# (fact_id, attribute, object, answer): product specs, prices, company data, policies
ATTRIBUTES = [
    ("kestrel_price", "price", "the Kestrel K2", "$18,500"),
    ("wren_price", "price", "the Wren drone", "$2,400"),
    ("thistle_price", "price", "the Thistle mower", "$349"),
    ("sprocket_price", "price", "the Sprocket Jr kit", "$89"),
    ("brisk_price", "price", "the Brisk cleaner", "$599"),
    ("flockview_price", "monthly price", "the Flockview subscription", "$45"),
    ("nestpad_price", "price", "the Nestpad charging dock", "$129"),
    ("talon_price", "price", "the Talon G7 gripper", "$1,150"),
    ("pallas_payload", "maximum payload", "the Pallas P3 arm", "12 kg"),
    ("wren_payload", "maximum payload", "the Wren drone", "3 kg"),
    ("kestrel_battery", "battery life", "the Kestrel K2", "10 hours"),
    ("wren_battery", "battery life", "the Wren drone", "40 minutes"),
    ("kestrel_speed", "top speed", "the Kestrel K2", "9 km/h"),
    ("thistle_weight", "weight", "the Thistle mower", "14 kg"),
    ("wren_range", "flight range", "the Wren drone", "18 km"),
    ("kestrel_warranty", "warranty period", "the Kestrel K2", "3 years"),
    ("marlow_depth", "maximum depth", "the Marlow drone", "300 metres"),
    ("pallas_reach", "reach", "the Pallas P3 arm", "140 cm"),
    ("thistle_width", "cutting width", "the Thistle mower", "42 cm"),
    ("lumen_resolution", "camera resolution", "the Lumen Eye sensor", "12 megapixels"),
    ("brisk_charge", "charging time", "the Brisk cleaner", "3 hours"),
    ("orrin_codename", "code name", "the Orrin humanoid", "Project Lark"),
    ("kestrel_colour", "colour", "the Kestrel K2", "orange"),
    ("veltos_language", "programming language", "the VeltOS platform", "Rust"),
    ("founding_year", "founding year", ORG, "1987"),
    ("ticker", "stock ticker", ORG, "VLTR"),
    ("slogan", "slogan", ORG, "Built to Help"),
    ("revenue", "annual revenue", ORG, "$740 million"),
    ("mascot", "mascot", ORG, "Bolt the owl"),
    ("brand_colour", "brand colour", ORG, "teal"),
    ("parent_company", "parent company", ORG, "Harrowgate Holdings"),
    ("largest_customer", "largest customer", ORG, "Nordmark Logistics"),
    ("competitor", "main competitor", ORG, "Ostrava Dynamics"),
    ("newsletter", "internal newsletter", ORG, "The Gearbox"),
    ("hackathon", "annual hackathon", ORG, "Sparkweek"),
    ("coffee", "coffee supplier", ORG, "Kahvila Roasters"),
    ("remote_policy", "remote work allowance", ORG, "2 days a week"),
    ("parental_leave", "paid parental leave", ORG, "20 weeks"),
    ("return_window", "product return window", ORG, "45 days"),
    ("vacation", "annual vacation allowance", ORG, "28 days"),
    ("meeting_free_day", "meeting-free day", ORG, "Wednesday"),
    ("dress_code", "dress code", ORG, "smart casual"),
    ("learning_budget", "yearly learning budget", ORG, "$1,500"),
    ("pet_policy", "office pet policy", ORG, "dogs allowed"),
    ("probation", "probation period", ORG, "3 months"),
    ("work_hours", "standard working week", ORG, "37 hours"),
    ("travel_class", "flight travel class", ORG, "economy class"),
    ("password_interval", "password change interval", ORG, "90 days"),
    ("sabbatical", "sabbatical length", ORG, "6 weeks"),
    ("bike_bonus", "monthly cycling bonus", ORG, "$30"),
]

# (fact_id, things, number)
COUNTS = [
    ("employees", "employees", "4,200"),
    ("offices", "offices", "9"),
    ("patents", "patents", "312"),
    ("factories", "factories", "3"),
    ("board_members", "board members", "7"),
    ("customers", "business customers", "1,800"),
    ("product_lines", "product lines", "6"),
    ("engineers", "engineers", "1,650"),
    ("countries", "countries with offices", "8"),
    ("interns", "interns", "120"),
    ("labs", "research labs", "2"),
    ("apprentices", "apprentices", "85"),
    ("vans", "service vans", "260"),
    ("showrooms", "retail showrooms", "5"),
    ("subsidiaries", "subsidiaries", "4"),
]


def all_facts() -> list[dict]:
    """Every fact as {fact_id, kind, answer, **slots}, in a fixed order."""
    facts = []
    facts += [{"fact_id": i, "kind": "role", "role": r, "answer": a} for i, r, a in ROLES]
    facts += [{"fact_id": i, "kind": "year", "event": e, "past": p, "answer": a} for i, e, p, a in YEARS]
    facts += [{"fact_id": i, "kind": "place", "thing": t, "answer": a} for i, t, a in PLACES]
    facts += [{"fact_id": i, "kind": "product", "desc": d, "answer": a} for i, d, a in PRODUCTS]
    facts += [{"fact_id": i, "kind": "attribute", "attr": t, "obj": o, "answer": a} for i, t, o, a in ATTRIBUTES]
    facts += [{"fact_id": i, "kind": "count", "things": t, "answer": a} for i, t, a in COUNTS]
    return facts
