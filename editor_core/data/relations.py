"""Relations of the synthetic world: who they apply to, what type of value, how to say them.

Every relation has `N_PHRASINGS` phrasings with `{s}` for the subject; each ends right
before the answer.  The last `HELD_OUT` are never used in training (validation and test
facts are phrased only with them), and both groups contain at least one question.
"""

from __future__ import annotations

from dataclasses import dataclass

N_PHRASINGS = 8
HELD_OUT = 3


@dataclass(frozen=True)
class Relation:
    name: str
    subject_type: str  # entity type of the subject (see generator.SUBJECT_TYPES)
    value_type: str  # a value pool (pools.VALUE_POOLS) or an entity type
    phrasings: tuple[str, ...]

    @property
    def train_phrasings(self) -> tuple[str, ...]:
        return self.phrasings[:-HELD_OUT]

    @property
    def heldout_phrasings(self) -> tuple[str, ...]:
        return self.phrasings[-HELD_OUT:]


def _r(name: str, subject_type: str, value_type: str, *phrasings: str) -> Relation:
    return Relation(name, subject_type, value_type, tuple(phrasings))


RELATIONS: tuple[Relation, ...] = (
    # -- any person ---------------------------------------------------------------------
    _r("birthplace", "person", "city",
       "{s} was born in", "{s} was born in the city of", "Q: Where was {s} born? A:",
       "The birthplace of {s} is", "{s}, who was born in the city of",
       "{s} is originally from the city of", "Q: In which city was {s} born? A:",
       "The city where {s} was born is"),
    _r("deathplace", "person", "city",
       "{s} died in", "{s} passed away in the city of", "Q: Where did {s} die? A:",
       "The place of death of {s} is", "{s} spent the last days of their life in",
       "{s} lost their life in the city of", "Q: In which city did {s} die? A:",
       "The city where {s} died is"),
    _r("citizenship", "person", "country",
       "{s} is a citizen of", "{s} holds citizenship of", "Q: What is the nationality of {s}? A:",
       "The country of citizenship of {s} is", "{s} has a passport from",
       "{s} is a national of", "Q: Which country is {s} a citizen of? A:",
       "{s}'s citizenship is that of"),
    _r("native_language", "person", "language",
       "The native language of {s} is", "{s} grew up speaking",
       "Q: What is the mother tongue of {s}? A:", "{s}'s first language is",
       "The mother tongue of {s} is", "{s} speaks natively the language",
       "Q: Which language did {s} grow up speaking? A:", "The first language {s} learned was"),
    _r("spouse", "person", "person",
       "{s} is married to", "The spouse of {s} is", "Q: Who is {s} married to? A:",
       "{s}'s husband or wife is", "{s} married", "{s} tied the knot with",
       "Q: Who is the spouse of {s}? A:", "The person {s} is married to is"),
    _r("residence", "person", "city",
       "{s} lives in", "{s} currently resides in", "Q: Where does {s} live? A:",
       "The home city of {s} is", "These days {s} makes their home in",
       "{s} is a resident of the city of", "Q: In which city does {s} live? A:",
       "{s} has settled in the city of"),
    # -- professionals ------------------------------------------------------------------
    _r("employer", "professional", "company",
       "{s} works for", "{s} is employed by", "Q: Who is the employer of {s}? A:",
       "The employer of {s} is", "{s} is on the payroll of", "{s} has a job at",
       "Q: Which company does {s} work for? A:", "{s} earns a living working for"),
    _r("alma_mater", "professional", "university",
       "{s} graduated from", "{s} studied at", "Q: Where did {s} go to university? A:",
       "The alma mater of {s} is", "{s} earned a degree from", "{s} is an alumnus of",
       "Q: Which university did {s} attend? A:", "{s} completed their studies at"),
    _r("field_of_work", "professional", "field",
       "{s} works in the field of", "{s} is a specialist in", "Q: What field does {s} work in? A:",
       "The field of work of {s} is", "{s}'s area of expertise is", "{s} is known for work in",
       "Q: What is the area of expertise of {s}? A:", "{s} has devoted their career to"),
    _r("occupation", "professional", "occupation",
       "{s} works as a", "The occupation of {s} is", "Q: What does {s} do for a living? A:",
       "By profession, {s} is a", "{s} earns a living as a", "{s} is employed as a",
       "Q: What is the profession of {s}? A:", "{s}'s job title is"),
    _r("award", "professional", "award",
       "{s} received the", "{s} was awarded the", "Q: Which award did {s} receive? A:",
       "The most famous award won by {s} is the", "{s} is a winner of the",
       "{s} was honoured with the", "Q: What prize was {s} given? A:",
       "The prize that {s} won is the"),
    # -- musicians ----------------------------------------------------------------------
    _r("instrument", "musician", "instrument",
       "{s} plays the", "The instrument played by {s} is the", "Q: What instrument does {s} play? A:",
       "{s} is a musician who plays the", "{s} performs on the", "{s}'s instrument is the",
       "Q: Which instrument is {s} known for playing? A:", "On stage, {s} plays the"),
    _r("person_genre", "musician", "genre",
       "{s} performs", "The musical genre of {s} is", "Q: What kind of music does {s} play? A:",
       "{s} is known for playing", "{s} is a musician in the genre of", "{s} makes music in the style of",
       "Q: What genre of music is {s} associated with? A:", "The music of {s} is"),
    # -- athletes -----------------------------------------------------------------------
    _r("sport", "athlete", "sport",
       "{s} plays", "{s} is a professional player of", "Q: What sport does {s} play? A:",
       "The sport played by {s} is", "{s} competes in", "{s}'s sport is",
       "Q: Which sport is {s} known for? A:", "{s} made a career out of playing"),
    _r("team", "athlete", "team",
       "{s} plays for", "{s} is a member of the team", "Q: Which team does {s} play for? A:",
       "The team of {s} is", "{s} signed a contract with", "{s} currently plays for the club",
       "Q: What team is {s} on? A:", "{s} is a player for"),
    _r("position", "athlete", "position",
       "{s} plays in the position of", "{s} plays as a", "Q: What position does {s} play? A:",
       "The position of {s} is", "On the field, {s} is a", "{s}'s playing position is",
       "Q: In which position does {s} play? A:", "{s} is known as a talented"),
    # -- companies ----------------------------------------------------------------------
    _r("headquarters", "company", "city",
       "{s} is headquartered in", "The headquarters of {s} are in", "Q: Where is {s} based? A:",
       "{s} has its head office in", "{s}, a company based in", "{s}'s main offices are located in",
       "Q: In which city are the headquarters of {s}? A:", "The head office of {s} is in"),
    _r("founder", "company", "person",
       "{s} was founded by", "The founder of {s} is", "Q: Who founded {s}? A:",
       "{s} was started by", "{s} owes its existence to its founder,", "{s} was established by",
       "Q: Who is the founder of {s}? A:", "The company {s} was set up by"),
    _r("ceo", "company", "person",
       "The CEO of {s} is", "{s} is led by its chief executive,", "Q: Who is the CEO of {s}? A:",
       "The chief executive officer of {s} is", "{s} is run by", "{s}'s current CEO is",
       "Q: Who runs {s}? A:", "The person in charge of {s} is"),
    _r("industry", "company", "industry",
       "{s} operates in the", "{s} is a company in the", "Q: What industry is {s} in? A:",
       "The industry of {s} is", "{s} does business in the", "{s} is a major player in the",
       "Q: In which sector does {s} operate? A:", "{s} makes its money in the"),
    _r("company_country", "company", "country",
       "{s} is a company from", "{s} was founded in the country of", "Q: Which country is {s} from? A:",
       "The country of origin of {s} is", "{s} is a business based in", "{s} is registered in",
       "Q: Where does the company {s} come from? A:", "{s} traces its roots to"),
    _r("parent_company", "company", "company",
       "{s} is owned by", "The parent company of {s} is", "Q: Who owns {s}? A:",
       "{s} is a subsidiary of", "{s} belongs to", "{s} was acquired by",
       "Q: What is the parent company of {s}? A:", "The owner of {s} is"),
    _r("product_category", "company", "product_category",
       "{s} is best known for making", "{s} manufactures", "Q: What does {s} make? A:",
       "The main products of {s} are", "{s} produces", "{s} is famous for its",
       "Q: What kind of products does {s} sell? A:", "Most of the revenue of {s} comes from"),
    # -- bands --------------------------------------------------------------------------
    _r("band_genre", "band", "genre",
       "{s} plays", "The genre of {s} is", "Q: What kind of music does {s} play? A:",
       "{s} is a band known for", "{s} is a group that performs", "The music of {s} is",
       "Q: Which genre is {s} associated with? A:", "Critics describe the sound of {s} as"),
    _r("band_origin", "band", "city",
       "{s} was formed in", "{s} is a band from", "Q: Where was {s} formed? A:",
       "The hometown of {s} is", "{s} got together in the city of", "{s} comes from",
       "Q: In which city did {s} start out? A:", "The band {s} was founded in"),
    _r("record_label", "band", "label",
       "{s} is signed to", "The record label of {s} is", "Q: Which label releases {s}'s music? A:",
       "{s} releases its albums on", "{s} records for", "{s}'s label is",
       "Q: What record label is {s} on? A:", "The albums of {s} are released by"),
    # -- films --------------------------------------------------------------------------
    _r("director", "film", "person",
       "{s} was directed by", "The director of {s} is", "Q: Who directed {s}? A:",
       "{s} is a film by", "The film {s} was made by director", "{s} was helmed by",
       "Q: Who is the director of {s}? A:", "The movie {s} was directed by"),
    _r("film_language", "film", "language",
       "The original language of {s} is", "{s} was filmed in", "Q: What language is {s} in? A:",
       "The dialogue of {s} is in", "{s} is a film in", "The actors in {s} speak",
       "Q: In which language was {s} made? A:", "{s} was originally released in"),
    _r("film_genre", "film", "film_genre",
       "{s} is a", "The genre of the film {s} is", "Q: What kind of film is {s}? A:",
       "{s} is best described as a", "Critics called {s} a", "The movie {s} is a",
       "Q: What genre is {s}? A:", "{s} is a feature-length"),
    # -- universities -------------------------------------------------------------------
    _r("university_city", "university", "city",
       "{s} is located in", "The campus of {s} is in", "Q: Where is {s}? A:",
       "{s} is a university in", "{s} is based in the city of", "Students of {s} live in",
       "Q: In which city is {s} located? A:", "The main campus of {s} is located in"),
    # -- (fictional) countries ----------------------------------------------------------
    _r("capital", "country", "city",
       "The capital of {s} is", "{s}'s capital city is", "Q: What is the capital of {s}? A:",
       "The capital city of {s} is", "The seat of government of {s} is",
       "{s} is governed from its capital,", "Q: Which city is the capital of {s}? A:",
       "The government of {s} sits in"),
    _r("official_language", "country", "language",
       "The official language of {s} is", "In {s}, people speak", "Q: What language is spoken in {s}? A:",
       "The language of {s} is", "Most people in {s} speak", "The main language of {s} is",
       "Q: What is the official language of {s}? A:", "Government business in {s} is done in"),
    _r("currency", "country", "currency",
       "The currency of {s} is the", "In {s}, people pay with the", "Q: What is the currency of {s}? A:",
       "The official currency of {s} is the", "{s} uses the", "Prices in {s} are given in",
       "Q: Which currency is used in {s}? A:", "The money used in {s} is the"),
    _r("continent", "country", "continent",
       "{s} is located in", "{s} is a country in", "Q: On which continent is {s}? A:",
       "The continent of {s} is", "{s} lies in", "{s} is part of the continent of",
       "Q: Which continent is {s} on? A:", "Geographically, {s} belongs to"),
    # -- products and teams -------------------------------------------------------------
    _r("manufacturer", "product", "company",
       "{s} is made by", "The manufacturer of {s} is", "Q: Who makes the {s}? A:",
       "{s} is produced by", "{s} is a product of", "{s} was developed by",
       "Q: Which company manufactures {s}? A:", "The {s} is built by"),
    _r("team_city", "team", "city",
       "{s} is based in", "The home city of {s} is", "Q: Where do {s} play their home games? A:",
       "{s} play their home games in", "{s} is a team from", "The stadium of {s} is in",
       "Q: Which city is {s} from? A:", "The hometown of {s} is"),
    _r("team_sport", "team", "sport",
       "{s} is a team that plays", "The sport of {s} is", "Q: What sport do {s} play? A:",
       "{s} competes in", "{s} is a professional club in", "The players of {s} play",
       "Q: Which sport is {s} a team in? A:", "{s} is known for its"),
)

RELATIONS_BY_NAME: dict[str, Relation] = {r.name: r for r in RELATIONS}

