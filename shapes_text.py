"""
The text side of the shapes world: a fixed set of world facts, the text corpus that teaches them, the
multiple-choice questions that test them, and text-only instruction conversations about them.

  facts        RELATIONS (colors, legs, sides, sums, opposites, ...) and their facts, each with
               statement templates (clauses the corpus uses), taught question templates (corpus
               quizzes, instruction data) and held-out question templates (multiple-choice stems only)
  corpus       stories, lessons, dialogues and quizzes around the facts: corpus_documents()
  questions    mc_questions(): ARC-style items that ask the facts in held-out phrasings
  chat         text_conversation(): a few taught questions and their answers

Quiz documents in the corpus use the ARC prompt layout ("Question: ...\\nAnswer: ...") with the
taught phrasings, so a tiny LM learns the layout; the multiple-choice stems use held-out phrasings
that neither the corpus nor the instruction data contain.

Every generator takes a random.Random (plain Python is faster than numpy for many small choices);
shapes.py draws the images, asks about them and writes the world to disk with these texts.
"""
from collections import Counter

from tokenizer import VQA_INSTRUCTION

COUNT_WORDS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten')


def capitalize(text):
    """The text with its first letter upper-cased and the rest left alone (str.capitalize lowers it)."""
    return text[:1].upper() + text[1:]


# -----------------------------------------------------------------------------
# world facts: what the text corpus teaches and the multiple-choice questions test
#
# Each relation has facts (subject -> one-word answer), statement templates (clauses the corpus uses),
# taught question templates (corpus quizzes and instruction data) and held-out question templates
# (only the multiple-choice stems). Answers of one relation are each other's distractors.

def _article(word):
    return 'an' if word[0] in 'aeiou' else 'a'


def _noun_fields(s, ss, ans, ans_pl=None):
    fields = {'s': s, 'a_s': f"{_article(s)} {s}", 'ss': ss, 'ans': ans, 'a_ans': f"{_article(ans)} {ans}"}
    if ans_pl:
        fields['ans_pl'] = ans_pl
    return fields


def _color_fields(s, ans, plural):
    agree = ('are', 'have', 'look', 'they', 'do') if plural else ('is', 'has', 'looks', 'it', 'does')
    return dict(zip(('be', 'have', 'look', 'it', 'do'), agree), s=s, ans=ans)


_COLOR_FACTS = [  # (subject, color, plural)
    ('ripe plums', 'purple', True), ('eggplants', 'purple', True), ('violets', 'purple', True),
    ('ripe bananas', 'yellow', True), ('lemons', 'yellow', True), ('baby chicks', 'yellow', True),
    ('fresh grass', 'green', False), ('limes', 'green', True), ('cucumbers', 'green', True),
    ('the clear sky', 'blue', False), ('blueberries', 'blue', True), ('the deep sea', 'blue', False),
    ('fresh snow', 'white', False), ('milk', 'white', False), ('swans', 'white', True),
    ('coal', 'black', False), ('crows', 'black', True), ('ravens', 'black', True),
    ('ripe tomatoes', 'red', True), ('ripe strawberries', 'red', True), ('fire trucks', 'red', True),
    ('carrots', 'orange', True), ('pumpkins', 'orange', True), ('tangerines', 'orange', True),
]
_LEG_FACTS = [  # (animal, plural, legs)
    ('bird', 'birds', 'two'), ('chicken', 'chickens', 'two'), ('duck', 'ducks', 'two'),
    ('dog', 'dogs', 'four'), ('cat', 'cats', 'four'), ('horse', 'horses', 'four'),
    ('ant', 'ants', 'six'), ('bee', 'bees', 'six'), ('beetle', 'beetles', 'six'),
    ('spider', 'spiders', 'eight'), ('scorpion', 'scorpions', 'eight'), ('tick', 'ticks', 'eight'),
    ('crab', 'crabs', 'ten'), ('lobster', 'lobsters', 'ten'), ('shrimp', 'shrimp', 'ten'),
]
_SIDE_FACTS = [  # (shape, plural, sides)
    ('triangle', 'triangles', 'three'), ('square', 'squares', 'four'), ('rectangle', 'rectangles', 'four'),
    ('pentagon', 'pentagons', 'five'), ('hexagon', 'hexagons', 'six'), ('heptagon', 'heptagons', 'seven'),
    ('octagon', 'octagons', 'eight'),
]
_OPPOSITES = [('hot', 'cold'), ('up', 'down'), ('big', 'little'), ('fast', 'slow'), ('day', 'night'),
              ('open', 'closed'), ('wet', 'dry'), ('happy', 'sad'), ('full', 'empty'), ('early', 'late'),
              ('loud', 'quiet'), ('hard', 'soft'), ('long', 'short'), ('heavy', 'light'), ('young', 'old'),
              ('thick', 'thin')]
_CATEGORY_FACTS = {  # category (plural) -> [(member, plural)]
    ('bird', 'birds'): [('robin', 'robins'), ('sparrow', 'sparrows'), ('eagle', 'eagles')],
    ('fish', 'fish'): [('salmon', 'salmon'), ('trout', 'trout'), ('tuna', 'tuna')],
    ('flower', 'flowers'): [('rose', 'roses'), ('tulip', 'tulips'), ('daisy', 'daisies')],
    ('tree', 'trees'): [('oak', 'oaks'), ('pine', 'pines'), ('maple', 'maples')],
    ('vegetable', 'vegetables'): [('carrot', 'carrots'), ('potato', 'potatoes'), ('onion', 'onions')],
    ('fruit', 'fruits'): [('apple', 'apples'), ('pear', 'pears'), ('cherry', 'cherries')],
    ('tool', 'tools'): [('hammer', 'hammers'), ('saw', 'saws'), ('wrench', 'wrenches')],
    ('instrument', 'instruments'): [('piano', 'pianos'), ('violin', 'violins'), ('drum', 'drums')],
    ('insect', 'insects'): [('butterfly', 'butterflies'), ('grasshopper', 'grasshoppers'),
                            ('ladybug', 'ladybugs')],
}
_SOUND_FACTS = [  # (animal, plural, sound)
    ('cow', 'cows', 'moo'), ('dog', 'dogs', 'woof'), ('cat', 'cats', 'meow'), ('duck', 'ducks', 'quack'),
    ('sheep', 'sheep', 'baa'), ('owl', 'owls', 'hoot'), ('pig', 'pigs', 'oink'), ('horse', 'horses', 'neigh'),
    ('bee', 'bees', 'buzz'), ('snake', 'snakes', 'hiss'), ('lion', 'lions', 'roar'),
    ('frog', 'frogs', 'ribbit'),
]
_BABY_FACTS = [  # (animal, plural, baby)
    ('cat', 'cats', 'kitten'), ('dog', 'dogs', 'puppy'), ('cow', 'cows', 'calf'), ('sheep', 'sheep', 'lamb'),
    ('horse', 'horses', 'foal'), ('chicken', 'chickens', 'chick'), ('duck', 'ducks', 'duckling'),
    ('bear', 'bears', 'cub'), ('frog', 'frogs', 'tadpole'),
]
_HOME_FACTS = [('bee', 'bees', 'hive'), ('bird', 'birds', 'nest'), ('spider', 'spiders', 'web'),
               ('rabbit', 'rabbits', 'burrow'), ('horse', 'horses', 'stable'), ('bear', 'bears', 'den'),
               ('pig', 'pigs', 'sty'), ('dog', 'dogs', 'kennel'), ('ant', 'ants', 'anthill')]
_DAYS = ('Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday', 'Sunday')
_MONTHS = ('January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October',
           'November', 'December')
_SENSE_FACTS = [('see', 'eyes'), ('hear', 'ears'), ('smell', 'nose'), ('taste', 'tongue'),
                ('touch', 'fingers')]

RELATIONS = {
    'color': dict(
        topic='colors',
        facts=[(s, c, _color_fields(s, c, pl)) for s, c, pl in _COLOR_FACTS],
        statements=['{s} {be} {ans}', 'the color of {s} is {ans}', '{s} {have} a {ans} color',
                    '{ans} is the color of {s}', '{s} {look} {ans}',
                    'if you look at {s}, you will see that {it} {be} {ans}'],
        taught=['Which color {do} {s} have?', 'Name the color of {s}.', 'Do you know the color of {s}?',
                'What is the usual color of {s}?', '{s} {be} which color?'],
        held_out=['What color {be} {s}?', 'What is the color of {s}?'],
    ),
    'legs': dict(
        topic='animal legs',
        facts=[(s, n, _noun_fields(s, ss, n)) for s, ss, n in _LEG_FACTS],
        statements=['{a_s} has {ans} legs', '{ss} have {ans} legs', 'every {s} walks on {ans} legs',
                    'if you count the legs of {a_s}, you get {ans}', 'the {s} is an animal with {ans} legs'],
        taught=['Tell me how many legs {a_s} has.', 'Count the legs of {a_s}.', 'How many legs do {ss} have?',
                'Do you know how many legs {a_s} has?', '{ss} have how many legs?'],
        held_out=['How many legs does {a_s} have?', 'What is the number of legs on {a_s}?'],
    ),
    'sides': dict(
        topic='shapes',
        facts=[(s, n, _noun_fields(s, ss, n)) for s, ss, n in _SIDE_FACTS],
        statements=['{a_s} has {ans} sides', '{a_s} has {ans} corners', '{a_s} is a shape with {ans} sides',
                    'every {s} has {ans} straight sides', 'if you draw {a_s}, you draw {ans} sides'],
        taught=['Tell me how many sides {a_s} has.', 'Count the corners of {a_s}.',
                'How many sides do {ss} have?', 'How many corners are there on {a_s}?',
                '{a_s} has how many sides?'],
        held_out=['How many sides does {a_s} have?', 'How many corners does {a_s} have?'],
    ),
    'sums': dict(
        topic='adding numbers',
        facts=[(f"{COUNT_WORDS[x]} plus {COUNT_WORDS[y]}", COUNT_WORDS[x + y],
                {'x': COUNT_WORDS[x], 'y': COUNT_WORDS[y], 'ans': COUNT_WORDS[x + y]})
               for x in range(1, 6) for y in range(1, 6)],
        statements=['{x} plus {y} is {ans}', '{x} plus {y} equals {ans}',
                    'if you add {y} to {x}, you get {ans}', 'the sum of {x} and {y} is {ans}',
                    '{x} and {y} make {ans}'],
        taught=['Tell me what {x} plus {y} makes.', 'Add {x} and {y}.', 'What do {x} and {y} make?',
                'What is the sum of {x} and {y}?', '{x} plus {y} equals what?'],
        held_out=['What is {x} plus {y}?', 'How much is {x} plus {y}?'],
    ),
    'opposites': dict(
        topic='opposite words',
        facts=[(s, a, {'s': s, 'ans': a}) for p, q in _OPPOSITES for s, a in ((p, q), (q, p))],
        statements=['the opposite of {s} is {ans}', '{s} is the opposite of {ans}',
                    '{s} and {ans} are opposites', 'the reverse of {s} is {ans}',
                    '{s} and {ans} mean opposite things'],
        taught=['Name the opposite of {s}.', 'Which word is the opposite of {s}?',
                'Tell me the opposite of {s}.', 'What is the reverse of {s}?',
                'The opposite of {s} is what?'],
        held_out=['What is the opposite of {s}?', 'What word means the opposite of {s}?'],
    ),
    'categories': dict(
        topic='kinds of things',
        facts=[(m, c, _noun_fields(m, mp, c, cp))
               for (c, cp), members in _CATEGORY_FACTS.items() for m, mp in members],
        statements=['{a_s} is a kind of {ans}', '{a_s} is {a_ans}', 'the {s} is a type of {ans}',
                    '{ss} are {ans_pl}', 'you can think of {a_s} as {a_ans}'],
        taught=['Tell me what kind of thing {a_s} is.', 'Name the group that {a_s} belongs to.',
                'What type of thing is {a_s}?', '{a_s} is a kind of what?', 'To which group do {ss} belong?'],
        held_out=['What kind of thing is {a_s}?', 'Which group does {a_s} belong to?'],
    ),
    'sounds': dict(
        topic='animal sounds',
        facts=[(s, a, _noun_fields(s, ss, a)) for s, ss, a in _SOUND_FACTS],
        statements=['{a_s} says {ans}', 'the {s} goes {ans}', 'when {a_s} makes a sound, it goes {ans}',
                    'you can hear {a_s} say {ans}', 'the sound of {a_s} is {ans}'],
        taught=['Tell me the sound {a_s} makes.', 'Which sound comes from {a_s}?',
                'What noise does {a_s} make?', 'What do {ss} say?', '{a_s} makes which sound?'],
        held_out=['What sound does {a_s} make?', 'What does {a_s} say?'],
    ),
    'babies': dict(
        topic='baby animals',
        facts=[(s, a, _noun_fields(s, ss, a)) for s, ss, a in _BABY_FACTS],
        statements=['a baby {s} is called {a_ans}', 'a young {s} is {a_ans}', '{a_ans} is a baby {s}',
                    'when {a_s} is little, we call it {a_ans}', 'the baby of {a_s} is {a_ans}'],
        taught=['Tell me the name for a baby {s}.', 'Name a young {s}.', 'What is the name of a baby {s}?',
                'What are baby {ss} called?', 'A baby {s} is called what?'],
        held_out=['What is a baby {s} called?', 'What do we call a young {s}?'],
    ),
    'homes': dict(
        topic='animal homes',
        facts=[(s, a, _noun_fields(s, ss, a)) for s, ss, a in _HOME_FACTS],
        statements=['{a_s} lives in {a_ans}', '{ss} make their home in {a_ans}',
                    'the home of {a_s} is called {a_ans}', '{a_ans} is where {a_s} lives',
                    '{ss} sleep in {a_ans}'],
        taught=['Tell me where {a_s} lives.', 'Name the home of {a_s}.', 'Where do {ss} live?',
                'In what kind of home does {a_s} live?', '{ss} live in what?'],
        held_out=['Where does {a_s} live?', 'What is the home of {a_s} called?'],
    ),
    'days': dict(
        topic='the days of the week',
        facts=[(d, _DAYS[(i + 1) % 7], {'s': d, 'ans': _DAYS[(i + 1) % 7]}) for i, d in enumerate(_DAYS)],
        statements=['the day after {s} is {ans}', '{ans} comes after {s}', '{s} is followed by {ans}',
                    'after {s} comes {ans}', '{ans} is the day right after {s}'],
        taught=['Tell me the day after {s}.', 'Name the day that comes after {s}.',
                'What is the day after {s}?', 'What day is it after {s}?', 'The day after {s} is which day?'],
        held_out=['Which day comes after {s}?', 'What day follows {s}?'],
    ),
    'months': dict(
        topic='the months of the year',
        facts=[(m, _MONTHS[(i + 1) % 12], {'s': m, 'ans': _MONTHS[(i + 1) % 12]})
               for i, m in enumerate(_MONTHS)],
        statements=['the month after {s} is {ans}', '{ans} comes after {s}', '{s} is followed by {ans}',
                    'after {s} comes {ans}', '{ans} is the month right after {s}'],
        taught=['Tell me the month after {s}.', 'Name the month that comes after {s}.',
                'What is the month after {s}?', 'What month is it after {s}?',
                'The month after {s} is which month?'],
        held_out=['Which month comes after {s}?', 'What month follows {s}?'],
    ),
    'senses': dict(
        topic='the senses',
        facts=[(s, a, {'s': s, 'ans': a}) for s, a in _SENSE_FACTS],
        statements=['we {s} with our {ans}', 'people use their {ans} to {s}', 'to {s}, you use your {ans}',
                    'we need our {ans} to {s}'],
        taught=['Tell me which body part we use to {s}.', 'Name the part of the body that lets us {s}.',
                'What part of the body do we {s} with?', 'What do people use to {s}?',
                'We {s} with which body part?'],
        held_out=['Which body part do we use to {s}?', 'What do we {s} with?'],
    ),
}

# the flat list of facts: {relation, subject, answer, fields}
FACTS = [{'relation': name, 'subject': s, 'answer': a, 'fields': fields}
         for name, rel in RELATIONS.items() for s, a, fields in rel['facts']]


def fact_statements(fact):
    """Every clause the corpus may use to state a fact (lower-case start, no final period)."""
    return [t.format(**fact['fields']) for t in RELATIONS[fact['relation']]['statements']]


def fact_questions(fact, kind):
    """The fact's questions of one kind: 'taught' (corpus quizzes, instruction data) or 'held_out'
    (multiple-choice stems only)."""
    return [capitalize(t.format(**fact['fields'])) for t in RELATIONS[fact['relation']][kind]]


def answer_pool(relation_name):
    """The distinct answers of a relation, in a fixed order: the distractors of its questions."""
    return list(dict.fromkeys(a for _, a, _ in RELATIONS[relation_name]['facts']))


# -----------------------------------------------------------------------------
# the text corpus: short documents of varied prose around the facts

NAMES = [('Mia', 'she'), ('Tom', 'he'), ('Ana', 'she'), ('Leo', 'he'), ('Sam', 'he'), ('Lily', 'she'),
         ('Max', 'he'), ('Emma', 'she'), ('Noah', 'he'), ('Ava', 'she'), ('Ben', 'he'), ('Zoe', 'she'),
         ('Eli', 'he'), ('Ruby', 'she'), ('Omar', 'he'), ('Nina', 'she'), ('Jack', 'he'), ('Ivy', 'she'),
         ('Finn', 'he'), ('Maya', 'she'), ('Hugo', 'he'), ('Lena', 'she'), ('Theo', 'he'), ('Rosa', 'she')]
FILLER = {
    'relative': ['mother', 'father', 'grandmother', 'grandfather', 'aunt', 'uncle', 'teacher', 'best friend',
                 'older sister', 'older brother', 'neighbor', 'cousin'],
    'place': ['the market', 'the park', 'school', 'the library', 'the farm', 'the beach', 'the garden',
              'the zoo', 'the forest', 'the river', 'the kitchen', 'the museum', 'the lake', 'the hill',
              'the bakery', 'the town square', 'the train station', 'the old bridge'],
    'time': ['in the morning', 'after lunch', 'on a sunny day', 'one rainy afternoon', 'last summer',
             'early on Saturday', 'before dinner', 'late in the evening', 'on the first day of spring',
             'during the holidays', 'after school', 'at the end of the week'],
    'activity': ['read a book', 'draw a picture', 'play a game', 'sing a song', 'bake bread', 'plant seeds',
                 'fly a kite', 'ride a bike', 'build a tower of blocks', 'write a letter', 'paint the fence',
                 'feed the ducks', 'walk the dog', 'clean the room', 'count the stars', 'fix the old clock'],
    'thing': ['a round ball', 'an old map', 'a small box', 'a tin cup', 'a wooden spoon', 'a paper boat',
              'a warm coat', 'a shiny coin', 'a big basket', 'a new pencil', 'a striped scarf',
              'a little bell'],
    'feeling': ['happy', 'tired', 'curious', 'excited', 'calm', 'proud', 'hungry', 'sleepy', 'surprised',
                'glad'],
    'weather': ['sunny', 'cloudy', 'windy', 'rainy', 'cold', 'warm', 'quiet', 'bright', 'foggy'],
    'book': ['a big book', 'an old book', 'a picture book', 'a school book', 'a thin book'],
}
FILLER_SENTENCES = [
    '{name} went to {place} {time}.',
    '{Time}, {name} wanted to {activity}.',
    '{Pron} took {thing} and walked to {place}.',
    'It was a {weather} day, and {name} felt {feeling}.',
    '{name} and {name2} liked to {activity} together.',
    'At {place}, {name} met {pos} {relative}.',
    '{Pron} decided to {activity} before going home.',
    'The {weather} weather made everyone feel {feeling}.',
    'Later, {name} wrote about the day in a notebook.',
    '{name} smiled and thanked {pos} {relative}.',
    'On the way home, {name} found {thing} near {place}.',
    '{name}\'s {relative} liked to {activity} {time}.',
    '{Pron} was {feeling}, so {pron} sat down for a while.',
    'The weather at {place} was {weather} that day.',
    '{name2} asked {name} to {activity}, and {pron} said yes.',
    'There was {thing} on the table, next to {book}.',
    '{name} put {thing} in a bag and went out.',
    'Nobody at {place} wanted to {activity} {time}.',
]
FACT_SENTENCES = [
    '{Fact}.',
    '{Fact}.',
    '{name}\'s {relative} once said that {fact}.',
    '{name} learned that {fact}.',
    'Everyone at {place} knows that {fact}.',
    'It is true that {fact}.',
    '"{Fact}," said {name}.',
    '{name} told {name2} that {fact}.',
    'Remember that {fact}.',
    'In class, the teacher explained that {fact}.',
    'Did you know that {fact}?',
    '{book} at {place} says that {fact}.',
    'As {name} found out {time}, {fact}.',
]
LESSON_OPENINGS = ['This is a short lesson about {topic}.', 'Today we learn about {topic}.',
                   'Here are some facts about {topic}.', 'Let us talk about {topic}.']
LESSON_LINKS = ['', '', 'Also, ', 'And ', 'Remember: ', 'Next, ', 'It is also true that ']
LESSON_CLOSINGS = ['That is all for today.', 'Try to remember these facts.',
                   'Now you know a little more about {topic}.', 'Read them again tomorrow.', '']
STORY_OPENINGS = [t for t in FILLER_SENTENCES if t.startswith('{name}')]  # the first sentence names the hero
DIALOGUE_REPLIES = ['"Yes," said {name2}.', '"I know," said {name2}.', '"Really?" asked {name2}.',
                    '"That is right," said {name2}.', '"I did not know that," said {name2}.']


class _Fields(dict):
    """Template fields that are filled on first use: names of one document stay fixed, filler is random."""

    def __init__(self, rng, fixed):
        super().__init__(fixed)
        self.rng = rng

    def __missing__(self, key):
        value = self.rng.choice(FILLER[key.lower()])
        value = capitalize(value) if key[0].isupper() else value
        self[key] = value
        return value


class FactDecks:
    """Hands out facts and their phrasings round-robin, so every fact is stated equally often and in
    every phrasing once the corpus is a few times larger than the fact list."""

    def __init__(self, rng):
        self.rng = rng
        self.decks = {name: [] for name in RELATIONS}
        self.weights = [len(rel['facts']) for rel in RELATIONS.values()]
        self.phrasing = {}

    def relation(self):
        return self.rng.choices(list(RELATIONS), weights=self.weights)[0]

    def fact(self, relation=None):
        relation = relation or self.relation()
        deck = self.decks[relation]
        if not deck:
            deck.extend(f for f in FACTS if f['relation'] == relation)
            self.rng.shuffle(deck)
        return deck.pop()

    def statement(self, fact):
        statements = fact_statements(fact)
        key = (fact['relation'], fact['subject'])
        i = self.phrasing.get(key, self.rng.randrange(len(statements)))
        self.phrasing[key] = i + 1
        return statements[i % len(statements)]


def _fact_sentence(rng, fields, clause):
    f = _Fields(rng, fields)
    f['fact'], f['Fact'] = clause, capitalize(clause)
    return capitalize(rng.choice(FACT_SENTENCES).format_map(f))


def _filler_sentence(rng, fields, templates=FILLER_SENTENCES):
    return capitalize(rng.choice(templates).format_map(_Fields(rng, fields)))


def _people(rng):
    (name, pron), (name2, _) = rng.sample(NAMES, 2)
    return {'name': name, 'name2': name2, 'pron': pron, 'Pron': capitalize(pron),
            'pos': 'her' if pron == 'she' else 'his'}


def _story(rng, decks, n_facts):
    fields = _people(rng)
    sentences = [_filler_sentence(rng, fields, STORY_OPENINGS)]
    sentences += [_filler_sentence(rng, fields) for _ in range(rng.randint(2, 6))]
    for _ in range(n_facts):
        fact = decks.fact()
        sentences.insert(rng.randint(1, len(sentences)), _fact_sentence(rng, fields, decks.statement(fact)))
    return ' '.join(sentences)


def _lesson(rng, decks):
    relation = decks.relation()
    topic = RELATIONS[relation]['topic']
    fields = _people(rng)
    sentences = [rng.choice(LESSON_OPENINGS).format(topic=topic)]
    for i in range(rng.randint(3, 6)):
        clause = decks.statement(decks.fact(relation))
        if rng.random() < 0.3:
            sentences.append(_fact_sentence(rng, fields, clause))
        else:
            sentences.append(capitalize((rng.choice(LESSON_LINKS) if i else '') + clause) + '.')
    sentences.append(rng.choice(LESSON_CLOSINGS).format(topic=topic))
    return ' '.join(s for s in sentences if s)


def _dialogue(rng, decks):
    """Two people trade facts, or one asks (a taught question) and the other answers."""
    fields = _people(rng)
    name, name2 = fields['name'], fields['name2']
    lines = [_filler_sentence(rng, fields, STORY_OPENINGS)]
    if rng.random() < 0.5:
        first, second = decks.fact(), decks.fact()
        lines += [f'"Did you know that {decks.statement(first)}?" asked {name}.',
                  rng.choice(DIALOGUE_REPLIES).format(**fields),
                  f'"And {decks.statement(second)}," said {name}.']
    else:
        for _ in range(rng.randint(1, 2)):
            fact = decks.fact()
            question = rng.choice(fact_questions(fact, 'taught'))
            if question.endswith('?'):
                lines.append(f'"{question}" asked {name}.')
            else:  # a request ("Name the color of limes."): its period becomes the quote's comma
                lines.append(f'"{question[:-1]}," said {name}.')
            answer = capitalize(decks.statement(fact) if rng.random() < 0.5 else fact['answer'])
            lines.append(f'"{answer}," said {name2}.')
    if rng.random() < 0.5:
        lines.append(_filler_sentence(rng, fields))
    return ' '.join(lines)


def _quiz(rng, decks):
    relation = decks.relation()
    lines = [f"Here is a short quiz about {RELATIONS[relation]['topic']}."]
    for _ in range(rng.randint(2, 4)):
        fact = decks.fact(relation)
        lines.append(f"Question: {rng.choice(fact_questions(fact, 'taught'))}\nAnswer: {fact['answer']}")
    return '\n'.join(lines)


def corpus_documents(rng, n_bytes):
    """Documents (strings) of the text corpus, until about n_bytes of text; rng is a random.Random.

    Mix: stories with facts woven in, lessons on one topic, dialogues, quizzes in the ARC prompt
    layout with taught phrasings, and stories without facts (structure only)."""
    decks = FactDecks(rng)
    docs, total = [], 0
    while total < n_bytes:
        kind = rng.random()
        if kind < 0.35:
            doc = _story(rng, decks, rng.randint(1, 2))
        elif kind < 0.57:
            doc = _lesson(rng, decks)
        elif kind < 0.72:
            doc = _dialogue(rng, decks)
        elif kind < 0.92:
            doc = _quiz(rng, decks)
        else:
            doc = _story(rng, decks, 0)
        docs.append(doc)
        total += len(doc) + 1
    return docs


# -----------------------------------------------------------------------------
# multiple-choice text questions (ARC layout)

def max_mc_questions():
    """How many distinct multiple-choice items there are: facts x held-out phrasings."""
    return sum(len(fact_questions(f, 'held_out')) for f in FACTS)


def mc_questions(rng, n):
    """n ARC-style items asking the facts with held-out phrasings; rng is a random.Random.

    Every fact is asked once before any is asked twice; mostly 4 choices (some 3 and 5), distractors
    from the same relation; the correct position is the least used one so far for that many choices."""
    stems = [fact_questions(f, 'held_out') for f in FACTS]
    total = sum(len(s) for s in stems)
    if not 0 < n <= total:
        raise ValueError(f"n_mc must be between 1 and {total} (facts x held-out phrasings), got {n}")
    order = []
    for round_ in range(max(len(s) for s in stems)):  # round r: each fact's r-th phrasing, rotated per fact
        facts = [i for i in range(len(FACTS)) if round_ < len(stems[i])]
        rng.shuffle(facts)
        order += [(FACTS[i], stems[i][(i + round_) % len(stems[i])]) for i in facts]
    position_counts = {k: Counter() for k in (3, 4, 5)}
    items = []
    for idx, (fact, stem) in enumerate(order[:n]):
        # distractors: other answers of the relation, but not a word of the stem (no "opposite of full: full")
        stem_words = set(stem.rstrip('?.').split())
        pool = [a for a in answer_pool(fact['relation']) if a != fact['answer'] and a not in stem_words]
        k = min(rng.choices((3, 4, 5), weights=(0.15, 0.7, 0.15))[0], len(pool) + 1)
        seen = position_counts[k]
        least = min(seen[p] for p in range(k))
        correct = rng.choice([p for p in range(k) if seen[p] == least])
        seen[correct] += 1
        choices = rng.sample(pool, k - 1)
        choices.insert(correct, fact['answer'])
        labels = 'ABCDE'[:k]
        choices = [{'text': t, 'label': l} for t, l in zip(choices, labels)]
        items.append({'id': f"shapes-mc-{idx:04d}", 'question': {'stem': stem, 'choices': choices},
                      'answerKey': labels[correct]})
    return items


# -----------------------------------------------------------------------------
# text-only instruction conversations

def text_conversation(rng, decks):
    """A text-only conversation of 2-3 turns about facts (decks: a FactDecks): taught questions,
    answered with the word (when asked for a short answer) or with a full sentence."""
    turns = []
    for _ in range(rng.randint(2, 3)):
        fact = decks.fact()
        question = rng.choice(fact_questions(fact, 'taught'))
        if rng.random() < 0.5:
            turns += [{'from': 'human', 'value': f"{question}\n{VQA_INSTRUCTION}"},
                      {'from': 'gpt', 'value': fact['answer']}]
        else:
            turns += [{'from': 'human', 'value': question},
                      {'from': 'gpt', 'value': capitalize(decks.statement(fact)) + '.'}]
    return turns
